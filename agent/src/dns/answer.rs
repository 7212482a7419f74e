//! One DNS request in, one response out: internal names from the task's scope, the rest
//! left to the caller to forward. Pure, so malformed and odd packets are tested directly.

use super::records::Scope;
use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::PTR;
use hickory_proto::rr::{Name, RData, Record, RecordType};

/// Answers live this long: changes show at once.
pub const TTL: u32 = 5;

pub enum Outcome {
    /// Send these bytes back.
    Reply(Vec<u8>),
    /// Not an internal name: forward the request as it is.
    Forward,
    /// Not even a header: nothing sensible to answer.
    Drop,
}

fn reply(req: &Message, code: ResponseCode) -> Message {
    let mut m = Message::response(req.metadata.id, req.metadata.op_code);
    m.metadata.recursion_desired = req.metadata.recursion_desired;
    m.metadata.recursion_available = true;
    m.metadata.authoritative = true;
    m.metadata.response_code = code;
    m.queries = req.queries.clone();
    m
}

fn encode(m: &Message) -> Outcome {
    m.to_vec().map(Outcome::Reply).unwrap_or(Outcome::Drop)
}

/// FORMERR carrying the request's id, when at least the id can be read.
fn formerr(packet: &[u8]) -> Outcome {
    if packet.len() < 2 {
        return Outcome::Drop;
    }
    let id = u16::from_be_bytes([packet[0], packet[1]]);
    let mut m = Message::response(id, OpCode::Query);
    m.metadata.response_code = ResponseCode::FormErr;
    encode(&m)
}

pub fn answer(scope: &Scope, packet: &[u8]) -> Outcome {
    let Ok(req) = Message::from_vec(packet) else {
        return formerr(packet);
    };
    if req.metadata.message_type != MessageType::Query || req.metadata.op_code != OpCode::Query {
        return encode(&reply(&req, ResponseCode::NotImp));
    }
    let [q] = req.queries.as_slice() else {
        return encode(&reply(&req, ResponseCode::FormErr));
    };
    let name = q.name().to_ascii();
    match q.query_type() {
        RecordType::A => match scope.lookup(&name) {
            Some(ips) => {
                let mut m = reply(&req, ResponseCode::NoError);
                for ip in ips {
                    m.add_answer(Record::from_rdata(q.name().clone(), TTL, RData::from(*ip)));
                }
                encode(&m)
            }
            None => Outcome::Forward,
        },
        // Internal names have IPv4 only: say so instead of asking upstream.
        RecordType::AAAA if scope.lookup(&name).is_some() => {
            encode(&reply(&req, ResponseCode::NoError))
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
                    encode(&m)
                }
                Err(_) => Outcome::Forward,
            },
            None => Outcome::Forward,
        },
        _ => Outcome::Forward,
    }
}

/// SERVFAIL for a request that could not be forwarded.
pub fn servfail(packet: &[u8]) -> Outcome {
    match Message::from_vec(packet) {
        Ok(req) => encode(&reply(&req, ResponseCode::ServFail)),
        Err(_) => formerr(packet),
    }
}
