//! One DNS request in, one response out: internal names from the task's scope, the rest
//! left to the caller to forward. Pure, so malformed and odd packets are tested directly.
//!
//! The rules a faster path must keep are small functions of their own: [`is_query`] (a
//! response is never answered), [`size_limit`] and [`fit`] (what fits in a reply over UDP
//! or TCP, TC when records are left out), the OPT that `reply` adds, and [`upstream_reply`]
//! (a forwarded answer must match what was asked).

use super::records::Scope;
use hickory_proto::op::{Edns, Message, OpCode, ResponseCode};
use hickory_proto::rr::rdata::PTR;
use hickory_proto::rr::{Name, RData, Record, RecordType};
use hickory_proto::serialize::binary::{BinEncodable, BinEncoder};

/// Answers live this long: changes show at once.
pub const TTL: u32 = 5;

/// The DNS header; anything shorter is not a message.
const HEADER: usize = 12;

/// The QR bit (set in responses) and the TC bit, in the header's third byte.
const QR: u8 = 0x80;
const TC: u8 = 0x02;

/// The largest UDP reply to a client without EDNS (RFC 1035 §4.2.1).
pub const UDP_PLAIN: usize = 512;

/// The largest UDP reply to an EDNS client, whatever it advertises, and the size our own
/// OPT advertises. Not DNS Flag Day's 1232: that avoids IP fragmentation on real paths,
/// but 127.0.0.11 is on the task's own loopback (MTU 65536), where nothing fragments.
/// 4096 is what resolvers commonly advertise and what our receive buffer holds.
pub const UDP_EDNS_MAX: u16 = 4096;

/// A DNS message over TCP carries a 16-bit length (RFC 1035 §4.2.2).
pub const TCP_MAX: usize = u16::MAX as usize;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

pub enum Outcome {
    /// Send these bytes back.
    Reply(Vec<u8>),
    /// Not an internal name: forward the request. The parsed request is what the
    /// upstream's answer is checked against and sized for.
    Forward(Box<Message>),
    /// A response, no header, or nothing that encodes: send nothing.
    Drop,
}

/// Whether `packet` has a header and asks (QR=0). A response is never answered: replying
/// to replies lets one spoofed datagram from 127.0.0.11:53 make the server answer itself
/// forever.
pub fn is_query(packet: &[u8]) -> bool {
    packet.len() >= HEADER && packet[2] & QR == 0
}

/// How many bytes a reply to `req` may take: over UDP 512 without EDNS, else the size the
/// client advertises (never under 512, at most [`UDP_EDNS_MAX`]); over TCP what a 16-bit
/// length can say.
pub fn size_limit(req: &Message, transport: Transport) -> usize {
    match (transport, &req.edns) {
        (Transport::Tcp, _) => TCP_MAX,
        (Transport::Udp, None) => UDP_PLAIN,
        (Transport::Udp, Some(e)) => e.max_payload().clamp(UDP_PLAIN as u16, UDP_EDNS_MAX).into(),
    }
}

/// The OPT for a reply to `req`: one exactly when the request had one (RFC 6891 §6.1.1),
/// version 0, with the request's DO bit copied (RFC 3225 §3).
fn edns_for(req: &Message) -> Option<Edns> {
    let theirs = req.edns.as_ref()?;
    let mut ours = Edns::new();
    ours.set_max_payload(UDP_EDNS_MAX);
    ours.set_version(0);
    ours.set_dnssec_ok(theirs.flags().dnssec_ok);
    Some(ours)
}

fn reply(req: &Message, code: ResponseCode) -> Message {
    let mut m = Message::response(req.metadata.id, req.metadata.op_code);
    m.metadata.recursion_desired = req.metadata.recursion_desired;
    m.metadata.recursion_available = true;
    m.metadata.authoritative = true;
    m.metadata.response_code = code;
    // One question is echoed; several are refused, and echoing them would only make the
    // refusal large.
    if let [q] = req.queries.as_slice() {
        m.queries = vec![q.clone()];
    }
    m.edns = edns_for(req);
    m
}

/// `m` encoded in at most `max` bytes (records that do not fit are left out and TC set).
fn encode_within(m: &Message, max: usize) -> Option<Vec<u8>> {
    let mut buf = Vec::with_capacity(max.min(usize::from(UDP_EDNS_MAX)));
    let mut encoder = BinEncoder::new(&mut buf);
    encoder.set_max_size(u16::try_from(max).unwrap_or(u16::MAX));
    m.emit(&mut encoder).ok()?;
    Some(buf)
}

/// `m` in at most `limit` bytes: whole, or with TC set and as many whole answers as fit
/// (clients then ask again over TCP). The OPT always stays, so an EDNS client still gets
/// one. None only if not even a header encodes.
pub fn fit(mut m: Message, limit: usize) -> Option<Vec<u8>> {
    let limit = limit.min(TCP_MAX);
    if let Some(whole) = encode_within(&m, limit)
        && whole[2] & TC == 0
    {
        return Some(whole);
    }
    // Too large. The encoder would drop the OPT (last in the message) before an answer,
    // so find how many answers fit in the room the OPT leaves.
    let opt = match &m.edns {
        Some(e) => Record::from(e).to_bytes().ok()?.len(),
        None => 0,
    };
    let edns = m.edns.take();
    m.metadata.truncation = true;
    // Only the answers are needed; the rest may go without saying (RFC 2181 §9).
    m.authorities.clear();
    m.additionals.clear();
    let answers = match encode_within(&m, limit.saturating_sub(opt)) {
        Some(b) => usize::from(u16::from_be_bytes([b[6], b[7]])),
        // Not even the question fits (a very long name in a tiny limit): header only.
        None => {
            m.queries.clear();
            0
        }
    };
    m.answers.truncate(answers);
    m.edns = edns;
    encode_within(&m, limit)
}

fn done(m: Message, limit: usize) -> Outcome {
    fit(m, limit).map_or(Outcome::Drop, Outcome::Reply)
}

/// FORMERR carrying the request's id, for a query whose header reads but the rest doesn't.
fn formerr(packet: &[u8]) -> Outcome {
    let id = u16::from_be_bytes([packet[0], packet[1]]);
    let mut m = Message::response(id, OpCode::Query);
    m.metadata.response_code = ResponseCode::FormErr;
    done(m, UDP_PLAIN)
}

pub fn answer(scope: &Scope, packet: &[u8], transport: Transport) -> Outcome {
    if !is_query(packet) {
        return Outcome::Drop;
    }
    let Ok(req) = Message::from_vec(packet) else {
        return formerr(packet);
    };
    let limit = size_limit(&req, transport);
    if req.edns.as_ref().is_some_and(|e| e.version() > 0) {
        // RFC 6891 §6.1.3: an EDNS version we do not speak gets BADVERS, with ours (0).
        return done(reply(&req, ResponseCode::BADVERS), limit);
    }
    if req.metadata.op_code != OpCode::Query {
        return done(reply(&req, ResponseCode::NotImp), limit);
    }
    let [q] = req.queries.as_slice() else {
        return done(reply(&req, ResponseCode::FormErr), limit);
    };
    let name = q.name().to_ascii();
    match q.query_type() {
        RecordType::A => match scope.lookup(&name) {
            Some(ips) => {
                let mut m = reply(&req, ResponseCode::NoError);
                for ip in ips {
                    m.add_answer(Record::from_rdata(q.name().clone(), TTL, RData::from(*ip)));
                }
                done(m, limit)
            }
            None => Outcome::Forward(Box::new(req)),
        },
        // Internal names have IPv4 only: say so instead of asking upstream.
        RecordType::AAAA if scope.lookup(&name).is_some() => {
            done(reply(&req, ResponseCode::NoError), limit)
        }
        RecordType::PTR => match scope.lookup_ptr(&name) {
            Some(target) => match Name::from_ascii(format!("{target}.")) {
                Ok(target) => {
                    let mut m = reply(&req, ResponseCode::NoError);
                    m.add_answer(Record::from_rdata(
                        q.name().clone(),
                        TTL,
                        RData::PTR(PTR(target)),
                    ));
                    done(m, limit)
                }
                Err(_) => Outcome::Forward(Box::new(req)),
            },
            None => Outcome::Forward(Box::new(req)),
        },
        _ => Outcome::Forward(Box::new(req)),
    }
}

/// SERVFAIL for a request that could not be forwarded.
pub fn servfail(req: &Message, transport: Transport) -> Option<Vec<u8>> {
    fit(
        reply(req, ResponseCode::ServFail),
        size_limit(req, transport),
    )
}

/// `packet` with another id: a query goes upstream with an id of our own, which the asking
/// task never sees, and the answer comes back with the client's.
pub fn with_id(packet: &[u8], id: u16) -> Vec<u8> {
    let mut out = packet.to_vec();
    out[..2].copy_from_slice(&id.to_be_bytes());
    out
}

/// The client's answer from what came back for `req`, sent upstream with id `sent_id`:
/// only a response with that id and the same question (or a bare error without one)
/// counts; anything else is None, for the forwarder to ignore while it waits. The reply
/// goes back with the client's id and within the client's size.
pub fn upstream_reply(
    req: &Message,
    sent_id: u16,
    reply: &[u8],
    transport: Transport,
) -> Option<Vec<u8>> {
    if reply.len() < HEADER
        || is_query(reply)
        || u16::from_be_bytes([reply[0], reply[1]]) != sent_id
    {
        return None;
    }
    let mut m = Message::from_vec(reply).ok()?;
    // Some servers drop the question from a refusal; such a reply carries no data.
    let bare_error = m.queries.is_empty()
        && m.answers.is_empty()
        && m.metadata.response_code != ResponseCode::NoError;
    if m.queries != req.queries && !bare_error {
        return None;
    }
    let limit = size_limit(req, transport);
    if reply.len() <= limit {
        // The upstream's own bytes, untouched but for the id.
        return Some(with_id(reply, req.metadata.id));
    }
    m.metadata.id = req.metadata.id;
    fit(m, limit)
}
