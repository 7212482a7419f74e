//! Task output: how it is kept on the node (`record`, `rotate`, `writer`) and published for
//! `service logs` (`publish`).

pub mod publish;
pub mod record;
pub mod rotate;
pub mod writer;

pub use publish::publish;

/// Waits (up to 5 s) for a file written by another thread to hold what `done` wants.
#[cfg(test)]
fn eventually_read(path: &std::path::Path, done: impl Fn(&str) -> bool) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if done(&text) || std::time::Instant::now() > deadline {
            return text;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
