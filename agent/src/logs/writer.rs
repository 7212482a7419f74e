//! Who writes a native task's output. The task's stdout and stderr are FIFOs in its
//! directory, read by a small process of its own (`shoald log-writer`, in its own process
//! group) that stamps each line with the time it was read and its stream, and writes the
//! records into the task's capped files. The task never holds a pipe to shoald, so it keeps
//! running, and its output keeps being kept, while shoald restarts (as containerd's shims
//! do for containers); the writer ends when the last holder of the task's output ends.

use super::record;
use super::rotate::{Limits, RotatingLog};
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;
use shoal_api::logs::Stream;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

/// Docker splits lines at 16 KiB too; a longer line becomes several records.
const MAX_LINE: u64 = 16 << 10;
const READY: &[u8] = b"ready\n";
const READY_WAIT: Duration = Duration::from_secs(5);

fn fifo(dir: &Path, stream: Stream) -> PathBuf {
    dir.join(format!("{}.fifo", stream.as_str()))
}

/// How a node runs the writer: shoald names itself; without a program (unit tests of the
/// executor) the same copying runs on a thread of this process.
#[derive(Clone, Debug, Default)]
pub struct WriterProgram(pub Option<PathBuf>);

/// The task's stdout and stderr, once a writer reads the other ends.
pub struct TaskOutput {
    pub stdout: File,
    pub stderr: File,
}

/// Makes the FIFOs in `dir`, starts their writer into `log` and returns the ends the task
/// writes to.
pub fn start(
    program: &WriterProgram,
    dir: &Path,
    log: &Path,
    limits: Limits,
) -> std::io::Result<TaskOutput> {
    let mut ends = Vec::new();
    for stream in [Stream::Stdout, Stream::Stderr] {
        let path = fifo(dir, stream);
        let _ = std::fs::remove_file(&path);
        nix::unistd::mkfifo(&path, Mode::S_IRUSR | Mode::S_IWUSR)?;
        // A read end held here lets the write end open without waiting, and keeps the
        // FIFO from reporting its end before the writer has opened its own read end.
        let hold = OpenOptions::new()
            .read(true)
            .custom_flags(OFlag::O_NONBLOCK.bits())
            .open(&path)?;
        let write = OpenOptions::new().write(true).open(&path)?;
        ends.push((hold, write));
    }
    match &program.0 {
        Some(exe) => spawn_process(exe, dir, log, limits)?,
        None => {
            let sources = open_sources(dir)?;
            let log = RotatingLog::open(log, limits)?;
            std::thread::spawn(move || copy_lines(sources, log));
        }
    }
    // The writer has its read ends open: the names can go.
    for stream in [Stream::Stdout, Stream::Stderr] {
        let _ = std::fs::remove_file(fifo(dir, stream));
    }
    let mut writes = ends.into_iter().map(|(_hold, write)| write);
    Ok(TaskOutput {
        stdout: writes.next().expect("two ends"),
        stderr: writes.next().expect("two ends"),
    })
}

fn spawn_process(exe: &Path, dir: &Path, log: &Path, limits: Limits) -> std::io::Result<()> {
    let mut child = std::process::Command::new(exe)
        .arg("log-writer")
        .arg("--dir")
        .arg(dir)
        .arg("--log")
        .arg(log)
        .arg("--max-size")
        .arg(limits.max_size.to_string())
        .arg("--max-files")
        .arg(limits.max_files.to_string())
        .env_clear()
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        // Its own group: a signal to shoald's (a Ctrl-C, a restart) leaves it running.
        .process_group(0)
        .spawn()?;
    let mut out = child.stdout.take().expect("piped");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; READY.len()];
        let _ = tx.send(out.read_exact(&mut buf).map(|()| buf));
    });
    // Reaps it when it ends, so it leaves no zombie while shoald runs.
    let reap = move |mut child: std::process::Child| {
        std::thread::spawn(move || child.wait());
    };
    match rx.recv_timeout(READY_WAIT) {
        Ok(Ok(buf)) if buf == READY => {
            reap(child);
            Ok(())
        }
        other => {
            let _ = child.kill();
            reap(child);
            Err(std::io::Error::other(format!(
                "the task's log writer ({} log-writer) did not start: {}",
                exe.display(),
                match other {
                    Ok(Ok(_)) => "it said something else than ready".to_string(),
                    Ok(Err(e)) => e.to_string(),
                    Err(_) => format!("no answer in {READY_WAIT:?}"),
                }
            )))
        }
    }
}

fn open_sources(dir: &Path) -> std::io::Result<Vec<(Stream, File)>> {
    [Stream::Stdout, Stream::Stderr]
        .into_iter()
        .map(|s| Ok((s, File::open(fifo(dir, s))?)))
        .collect()
}

/// `shoald log-writer`: opens the FIFOs shoald made, says it is ready, and copies until the
/// task and everything it started have closed their output.
pub fn run(dir: &Path, log: &Path, limits: Limits) -> std::io::Result<()> {
    let sources = open_sources(dir)?;
    let log = RotatingLog::open(log, limits)?;
    let mut stdout = std::io::stdout();
    stdout.write_all(READY)?;
    stdout.flush()?;
    copy_lines(sources, log);
    Ok(())
}

/// Reads each source on its own thread; one writer keeps the records in arrival order.
fn copy_lines(sources: Vec<(Stream, File)>, mut log: RotatingLog) {
    let (tx, rx) = mpsc::sync_channel::<(i64, Stream, Vec<u8>)>(1024);
    for (stream, file) in sources {
        let tx = tx.clone();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(file);
            loop {
                let mut line = Vec::new();
                match reader.by_ref().take(MAX_LINE).read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {
                        if line.last() == Some(&b'\n') {
                            line.pop();
                        }
                        if tx.send((record::now(), stream, line)).is_err() {
                            return;
                        }
                    }
                }
            }
        });
    }
    drop(tx);
    let mut buf = Vec::new();
    while let Ok(first) = rx.recv() {
        buf.clear();
        // Whatever else is waiting goes in the same write.
        for (time, stream, text) in std::iter::once(first).chain(rx.try_iter()) {
            record::encode(time, stream, &text, &mut buf);
        }
        if let Err(e) = log.write(&buf) {
            // Keep reading, so the task does not block on a full pipe; the lines are lost.
            eprintln!("shoal log-writer: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_streams_reach_the_file_with_times_until_the_task_closes_them() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("output.log");
        let before = record::now();
        let out = start(&WriterProgram(None), dir.path(), &log, Limits::default()).unwrap();
        assert!(
            !fifo(dir.path(), Stream::Stdout).exists(),
            "the FIFO names are gone once opened"
        );
        let status = std::process::Command::new("sh")
            .args(["-c", "echo one; echo two >&2; printf 'no newline'"])
            .stdout(out.stdout)
            .stderr(out.stderr)
            .status()
            .unwrap();
        assert!(status.success());
        let text = super::super::eventually_read(&log, |t| t.lines().count() == 3);
        let mut records: Vec<_> = text.lines().map(record::parse).collect();
        records.sort_by_key(|r| r.text);
        assert!(records.iter().all(|r| r.time.unwrap() >= before));
        let got: Vec<_> = records.iter().map(|r| (r.stream, r.text)).collect();
        assert_eq!(
            got,
            [
                (Stream::Stdout, "no newline"),
                (Stream::Stdout, "one"),
                (Stream::Stderr, "two")
            ]
        );
    }

    #[test]
    fn a_long_line_is_split_into_records_of_16_kib() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("output.log");
        let mut out = start(&WriterProgram(None), dir.path(), &log, Limits::default()).unwrap();
        out.stdout.write_all(&vec![b'x'; 40 << 10]).unwrap();
        out.stdout.write_all(b"\n").unwrap();
        drop(out);
        let text = super::super::eventually_read(&log, |t| t.lines().count() == 3);
        let lens: Vec<usize> = text.lines().map(|l| record::parse(l).text.len()).collect();
        assert_eq!(lens, [16 << 10, 16 << 10, 8 << 10]);
    }
}
