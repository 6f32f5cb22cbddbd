//! SIGINT and SIGTERM for both programs: the first cancels the "start no
//! new work" token (work in flight finishes, the summary and report follow,
//! exit 130); the second exits 130 at once.

use tokio_util::sync::CancellationToken;

use crate::error::exit;

/// Watch for the two signals: `first` says what stops at the first one
/// (then `soft` is cancelled), `last` is called before the process exits at
/// the second.
pub async fn watch(soft: CancellationToken, first: impl Fn(), last: impl Fn()) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return;
    };
    for n in 0..2 {
        tokio::select! {
            _ = int.recv() => {},
            _ = term.recv() => {},
        }
        if n == 0 {
            first();
            soft.cancel();
        } else {
            last();
            std::process::exit(exit::INTERRUPTED as i32);
        }
    }
}
