//! `/services/{id}/logs` and `/tasks/{id}/logs`: task output in Docker's stream format.
//!
//! Without a TTY each line is a frame `[stream, 0, 0, 0, len as u32 BE] payload` (stdout
//! is 1); with `details=1` (what `docker service logs` asks for) the payload starts with
//! the task's `com.docker.swarm.*` ids, from which the CLI prints `name.slot@node`.

use super::error::{ApiError, ApiResult};
use super::gojson::query_bool;
use super::{Api, services, tasks};
use crate::logs::record;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use shoal_api::logs::{LogLine, LogsRequest, Stream};
use shoal_api::wire::unframe;
use std::collections::HashMap;
use tokio_stream::StreamExt;

#[derive(Debug)]
struct Options {
    follow: bool,
    tail: Option<u64>,
    details: bool,
    timestamps: bool,
    since: Option<i64>,
    stdout: bool,
    stderr: bool,
}

/// Docker's `since`: Unix seconds with an optional fraction (`1733330000.5`), as the CLI
/// sends it whatever the user typed; 0 means from the start.
fn parse_since(v: &str) -> ApiResult<Option<i64>> {
    let bad = || {
        ApiError::bad(format!(
            "invalid since {v:?}: give Unix seconds, optionally with a fraction"
        ))
    };
    let (secs, frac) = v.split_once('.').unwrap_or((v, ""));
    let secs: i64 = secs.parse().map_err(|_| bad())?;
    if frac.len() > 9 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let nanos: i64 = format!("{frac:0<9}").parse().map_err(|_| bad())?;
    let at = secs
        .checked_mul(1_000_000_000)
        .and_then(|s| s.checked_add(nanos))
        .ok_or_else(bad)?;
    Ok((at > 0).then_some(at))
}

fn options(q: &HashMap<String, String>) -> ApiResult<Options> {
    let flag = |k: &str| query_bool(q.get(k).map(String::as_str));
    if !flag("stdout") && !flag("stderr") {
        return Err(ApiError::bad(
            "Bad parameters: you must choose at least one stream",
        ));
    }
    let since = match q.get("since").map(String::as_str) {
        None | Some("") => None,
        Some(v) => parse_since(v)?,
    };
    let tail = match q.get("tail").map(String::as_str) {
        None | Some("") | Some("all") => None,
        Some(n) => Some(n.parse::<i64>().map_err(|_| {
            ApiError::bad(format!(
                "invalid tail {n:?}: give a number of lines or \"all\""
            ))
        })?)
        .filter(|n| *n >= 0)
        .map(|n| n as u64),
    };
    Ok(Options {
        follow: flag("follow"),
        tail,
        details: flag("details"),
        timestamps: flag("timestamps"),
        since,
        stdout: flag("stdout"),
        stderr: flag("stderr"),
    })
}

/// One line as Docker frames it.
fn frame(tty: bool, stream: Stream, payload: String) -> Bytes {
    if tty {
        return Bytes::from(payload);
    }
    let kind = match stream {
        Stream::Stdout => 1,
        Stream::Stderr => 2,
    };
    let mut out = Vec::with_capacity(payload.len() + 8);
    out.extend_from_slice(&[kind, 0, 0, 0]);
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload.as_bytes());
    Bytes::from(out)
}

/// The ids `details` puts before each line: node, service, task.
struct TaskIds {
    node: String,
    service: String,
}

async fn stream(
    api: &Api,
    service: &str,
    only_task: Option<String>,
    q: &HashMap<String, String>,
) -> ApiResult<Response> {
    let opts = options(q)?;
    let svc = services::service(api, service).await?.service;
    let tty = svc.spec.task_template.container_spec.tty;
    let ids: HashMap<String, TaskIds> = tasks::list_all(api)
        .await?
        .into_iter()
        .filter(|t| t.task.service_id == svc.id)
        .map(|t| {
            let ids = TaskIds {
                node: t.task.node_id.clone(),
                service: t.task.service_id.clone(),
            };
            (t.task.id, ids)
        })
        .collect();
    let frames = api
        .daemon
        .logs(LogsRequest {
            service: svc.id.clone(),
            follow: opts.follow,
            tail: opts.tail,
            since: opts.since,
        })
        .await?;
    let Options {
        details,
        timestamps,
        stdout,
        stderr,
        ..
    } = opts;
    let lines = frames.filter_map(move |item| {
        let line: LogLine = match item.and_then(|f| unframe(&f)) {
            Ok(l) => l,
            // The leader went away or a node's stream broke: end the body there.
            Err(e) => return Some(Err(std::io::Error::other(e.message().to_string()))),
        };
        if only_task.as_ref().is_some_and(|t| *t != line.task_id) {
            return None;
        }
        let asked = match line.stream {
            Stream::Stdout => stdout,
            Stream::Stderr => stderr,
        };
        if !asked {
            return None;
        }
        let mut text = line.line;
        text.push('\n');
        if details {
            let (node, service) = ids
                .get(&line.task_id)
                .map(|i| (i.node.as_str(), i.service.as_str()))
                .unwrap_or(("", ""));
            text = format!(
                "com.docker.swarm.node.id={node},com.docker.swarm.service.id={service},com.docker.swarm.task.id={} {text}",
                line.task_id
            );
        }
        if timestamps {
            // Docker puts the time first, then the details.
            let at = line.time.map(record::format_time);
            text = format!("{} {text}", at.as_deref().unwrap_or(shoal_api::logs::ZERO_TIME));
        }
        Some(Ok(frame(tty, line.stream, text)))
    });
    Ok((
        [(CONTENT_TYPE, "application/vnd.docker.raw-stream")],
        Body::from_stream(lines),
    )
        .into_response())
}

pub async fn service_logs(
    State(api): State<Api>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    stream(&api, &id, None, &q).await
}

pub async fn task_logs(
    State(api): State<Api>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    let t = tasks::task(&api, &id).await?.task;
    stream(&api, &t.service_id, Some(t.id), &q).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_framed_by_stream_unless_the_service_has_a_tty() {
        let f = frame(false, Stream::Stdout, "hi\n".into());
        assert_eq!(&f[..], &[1, 0, 0, 0, 0, 0, 0, 3, b'h', b'i', b'\n']);
        let f = frame(false, Stream::Stderr, "no\n".into());
        assert_eq!(&f[..4], &[2, 0, 0, 0]);
        assert_eq!(&frame(true, Stream::Stderr, "hi\n".into())[..], b"hi\n");
    }

    #[test]
    fn since_reads_as_the_cli_sends_it() {
        assert_eq!(parse_since("0").unwrap(), None);
        assert_eq!(
            parse_since("1733330000").unwrap(),
            Some(1_733_330_000_000_000_000)
        );
        assert_eq!(
            parse_since("1733330000.5").unwrap(),
            Some(1_733_330_000_500_000_000)
        );
        assert_eq!(
            parse_since("1733330000.000000001").unwrap(),
            Some(1_733_330_000_000_000_001)
        );
        for bad in ["soon", "1.x", "1.0000000001", "99999999999999999999"] {
            let e = parse_since(bad).unwrap_err();
            assert!(e.message.contains("invalid since"), "{bad}: {}", e.message);
        }
    }

    #[test]
    fn query_options_follow_docker() {
        let q = |pairs: &[(&str, &str)]| -> HashMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let o = options(&q(&[
            ("stdout", "1"),
            ("tail", "5"),
            ("follow", "true"),
            ("details", "1"),
        ]))
        .unwrap();
        assert_eq!((o.follow, o.tail, o.details), (true, Some(5), true));
        assert_eq!(
            options(&q(&[("stderr", "1"), ("tail", "all")]))
                .unwrap()
                .tail,
            None
        );
        assert!(
            options(&q(&[]))
                .unwrap_err()
                .message
                .contains("at least one stream")
        );
        let o = options(&q(&[
            ("stderr", "1"),
            ("timestamps", "1"),
            ("since", "10.25"),
        ]))
        .unwrap();
        assert_eq!(
            (o.stdout, o.stderr, o.timestamps, o.since),
            (false, true, true, Some(10_250_000_000))
        );
        assert!(options(&q(&[("stdout", "1"), ("tail", "x")])).is_err());
    }
}
