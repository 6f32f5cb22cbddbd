//! Which side of the copy something belongs to: the source or the
//! destination, with the words and Go-style flags that name it in messages.

use std::fmt;

use serde::Serialize;

/// The source or the destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Source,
    Destination,
}

impl Role {
    /// "source" or "destination".
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Source => "source",
            Role::Destination => "destination",
        }
    }

    /// The flag naming the side's settings file.
    pub fn settings_flag(self) -> &'static str {
        match self {
            Role::Source => "-src",
            Role::Destination => "-dst",
        }
    }

    /// The flag giving the side's keep services list.
    pub fn services_flag(self) -> &'static str {
        match self {
            Role::Source => "-src-keep-services-json",
            Role::Destination => "-dst-keep-services-json",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
