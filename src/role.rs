//! Which side of the copy something belongs to: the source or the
//! destination (or, for keep-block-check, the one cluster it checks), with
//! the words and Go-style flags that name it in messages.

use std::fmt;

use serde::Serialize;

/// The source or the destination; `Cluster` is keep-block-check's one side.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Source,
    Destination,
    Cluster,
}

impl Role {
    /// "source" or "destination".
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Source => "source",
            Role::Destination => "destination",
            Role::Cluster => "cluster",
        }
    }

    /// "source cluster", "destination cluster", or "cluster".
    pub fn cluster(self) -> &'static str {
        match self {
            Role::Source => "source cluster",
            Role::Destination => "destination cluster",
            Role::Cluster => "cluster",
        }
    }

    /// The flag of the side's blob signature TTL.
    pub fn ttl_flag(self) -> &'static str {
        match self {
            Role::Source => "-src-blob-signature-ttl",
            Role::Destination => "-dst-blob-signature-ttl",
            Role::Cluster => "-blob-signature-ttl",
        }
    }

    /// What an error that ends the run before any block says was done.
    pub fn nothing_done(self) -> &'static str {
        match self {
            Role::Source | Role::Destination => "Nothing was copied",
            Role::Cluster => "Nothing was checked",
        }
    }

    /// The flag naming the side's settings file.
    pub fn settings_flag(self) -> &'static str {
        match self {
            Role::Source => "-src",
            Role::Destination => "-dst",
            Role::Cluster => "-config",
        }
    }

    /// The flag giving the side's keep services list.
    pub fn services_flag(self) -> &'static str {
        match self {
            Role::Source => "-src-keep-services-json",
            Role::Destination => "-dst-keep-services-json",
            Role::Cluster => "-keep-services-json",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
