//! The fast path for internal names over UDP: a query is read in place (header, exactly one
//! question, an optional OPT) and answered from a table of records encoded when the names
//! changed, without building a message. It takes only what the general path in `answer`
//! would answer itself, and returns the very bytes that path would (the tests compare both
//! on random and mangled packets); everything else (external names, PTR, odd flags, EDNS
//! options, anything malformed) is left to the general path.

use super::answer::{TTL, UDP_EDNS_MAX, UDP_PLAIN};
use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::net::Ipv4Addr;

const HEADER: usize = 12;
/// Longest name on the wire, root label included (RFC 1035 §3.1).
const NAME_MAX: usize = 255;
const LABEL_MAX: usize = 63;
const TYPE_A: u16 = 1;
const TYPE_AAAA: u16 = 28;
const TYPE_OPT: u16 = 41;
const CLASS_IN: u16 = 1;
/// An A record after its name: type, class, TTL, length, address.
const TAIL: usize = 14;
/// The name of a compressed record: a pointer to the question's at offset 12.
const POINTER: [u8; 2] = [0xc0, 0x0c];
/// hickory's encoder compresses the first 120 names of a message and writes the rest in
/// full (`COMPRESSED_NAME_LIMIT`); the question's is the first.
const COMPRESSED_RECORDS: usize = 119;
/// Our OPT: root name, type, class (payload size), TTL (extended rcode, version, flags),
/// empty RDATA.
const OPT: usize = 11;
/// The DO bit in the OPT's flags (RFC 3225).
const DO: u16 = 0x8000;

/// The largest reply the fast path writes: what an EDNS client may get over UDP.
pub const REPLY_MAX: usize = UDP_EDNS_MAX as usize;

/// Pre-encoded answers for one scope's names, keyed by the name in lowercase wire form
/// without its root label. One table serves every task whose names are the same.
#[derive(Debug, Default)]
pub struct Table {
    answers: HashMap<Box<[u8]>, Box<[u8]>>,
    /// Of the (name, records) pairs in order: finds a table again after a view change that
    /// left the names alone.
    hash: u64,
}

/// Whether the label's bytes print as themselves in the general path's `to_ascii` (which is
/// what it looks names up by): ASCII letters, digits, `_`, and `-` past the first byte.
/// Any other label is escaped there, so a name holding one is left to that path.
fn plain_label(label: &[u8]) -> bool {
    !label.is_empty()
        && label.len() <= LABEL_MAX
        && label
            .iter()
            .enumerate()
            .all(|(i, b)| b.is_ascii_alphanumeric() || *b == b'_' || (*b == b'-' && i > 0))
}

/// `name` (lowercase, dotted, no trailing dot) in wire form without the root label, or
/// None if a query could not spell it with plain labels.
fn wire_name(name: &str) -> Option<Box<[u8]>> {
    let mut out = Vec::with_capacity(name.len() + 1);
    for label in name.split('.') {
        let label = label.as_bytes();
        if !plain_label(label) {
            return None;
        }
        out.push(u8::try_from(label.len()).ok()?);
        out.extend(label.iter().map(u8::to_ascii_lowercase));
    }
    // The root label's byte counts towards the limit.
    (out.len() < NAME_MAX).then(|| out.into_boxed_slice())
}

/// The records' tails, one after the other; the names are the question's, written when
/// the query's spelling is known.
fn records(ips: &[Ipv4Addr]) -> Box<[u8]> {
    let mut out = Vec::with_capacity(ips.len() * TAIL);
    for ip in ips {
        out.extend_from_slice(&[0, TYPE_A as u8, 0, CLASS_IN as u8]);
        out.extend_from_slice(&TTL.to_be_bytes());
        out.extend_from_slice(&4u16.to_be_bytes());
        out.extend_from_slice(&ip.octets());
    }
    out.into_boxed_slice()
}

type Entries = Vec<(Box<[u8]>, Box<[u8]>)>;

fn entries(names: &BTreeMap<String, Vec<Ipv4Addr>>) -> (Entries, u64) {
    let entries: Entries = names
        .iter()
        .filter_map(|(name, ips)| Some((wire_name(name)?, records(ips))))
        .collect();
    let mut h = DefaultHasher::new();
    entries.hash(&mut h);
    (entries, h.finish())
}

impl Table {
    pub fn new(names: &BTreeMap<String, Vec<Ipv4Addr>>) -> Table {
        let (entries, hash) = entries(names);
        Table {
            answers: entries.into_iter().collect(),
            hash,
        }
    }

    /// One of `known` that answers `names` exactly as a new table would, else a new one:
    /// a view update that leaves a scope's names alone builds nothing.
    pub fn reuse_or_build<'a>(
        names: &BTreeMap<String, Vec<Ipv4Addr>>,
        known: impl IntoIterator<Item = &'a std::sync::Arc<Table>>,
    ) -> std::sync::Arc<Table> {
        let (entries, hash) = entries(names);
        let same = |t: &Table| {
            t.hash == hash
                && t.answers.len() == entries.len()
                && entries.iter().all(|(k, v)| t.answers.get(k) == Some(v))
        };
        known
            .into_iter()
            .find(|t| same(t))
            .cloned()
            .unwrap_or_else(|| {
                std::sync::Arc::new(Table {
                    answers: entries.into_iter().collect(),
                    hash,
                })
            })
    }

    pub fn len(&self) -> usize {
        self.answers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.answers.is_empty()
    }
}

/// What the fast path reads from a query it can take.
struct Query {
    /// Where the question ends (after its type and class).
    question_end: usize,
    qtype: u16,
    rd: bool,
    /// The client's advertised size and DO bit, when it sent an OPT.
    edns: Option<(u16, bool)>,
}

fn u16_at(p: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*p.get(at)?, *p.get(at + 1)?]))
}

/// The query in `p`, and its name lowercased into `key`, if the fast path takes it: a
/// standard query (QR=0, opcode 0, no AA, TC, RA, Z or rcode; AD and CD allowed, as dig
/// sets AD), one question of type A or AAAA and class IN whose name is plain labels (no
/// compression pointer), and at most an OPT of version 0 with no options and no flags
/// but DO; nothing after it.
fn parse(p: &[u8], key: &mut [u8; NAME_MAX]) -> Option<(Query, usize)> {
    if p.len() < HEADER || p[2] & !0x01 != 0 || p[3] & !0x30 != 0 {
        return None;
    }
    let (qd, an, ns, ar) = (u16_at(p, 4)?, u16_at(p, 6)?, u16_at(p, 8)?, u16_at(p, 10)?);
    if qd != 1 || an != 0 || ns != 0 || ar > 1 {
        return None;
    }
    let mut at = HEADER;
    let mut key_len = 0;
    loop {
        let len = usize::from(*p.get(at)?);
        if len == 0 {
            at += 1;
            break;
        }
        let label = p.get(at + 1..at + 1 + len)?;
        if !plain_label(label) || key_len + 1 + len >= NAME_MAX {
            return None;
        }
        key[key_len] = len as u8;
        for (k, b) in key[key_len + 1..key_len + 1 + len].iter_mut().zip(label) {
            *k = b.to_ascii_lowercase();
        }
        key_len += 1 + len;
        at += 1 + len;
    }
    if key_len == 0 {
        return None;
    }
    let qtype = u16_at(p, at)?;
    if !matches!(qtype, TYPE_A | TYPE_AAAA) || u16_at(p, at + 2)? != CLASS_IN {
        return None;
    }
    let question_end = at + 4;
    let edns = if ar == 1 {
        // Root name, OPT, size, extended rcode 0, version 0, flags, RDLENGTH 0.
        let opt = p.get(question_end..question_end + OPT)?;
        let flags = u16::from_be_bytes([opt[7], opt[8]]);
        if opt[0] != 0
            || u16::from_be_bytes([opt[1], opt[2]]) != TYPE_OPT
            || opt[5] != 0
            || opt[6] != 0
            || flags & !DO != 0
            || opt[9..11] != [0, 0]
        {
            return None;
        }
        Some((u16::from_be_bytes([opt[3], opt[4]]), flags & DO != 0))
    } else {
        None
    };
    let end = question_end + if edns.is_some() { OPT } else { 0 };
    if p.len() != end {
        return None;
    }
    Some((
        Query {
            question_end,
            qtype,
            rd: p[2] & 0x01 != 0,
            edns,
        },
        key_len,
    ))
}

/// How many of `n` records, the first starting at `at`, the general path's encoder fits in
/// `limit` bytes, and where they end. It checks the limit on every write, and writes a
/// compressed name whole before trimming it to a pointer: such a record needs room for
/// its name's labels (`name` bytes on the wire, root included, less the root) for a
/// moment, and 16 bytes once written; an uncompressed one needs `name` + 14.
fn fitting(n: usize, name: usize, mut at: usize, limit: usize) -> (usize, usize) {
    for i in 0..n {
        let (size, peak) = if i < COMPRESSED_RECORDS {
            (POINTER.len() + TAIL, (name - 1).max(POINTER.len() + TAIL))
        } else {
            (name + TAIL, name + TAIL)
        };
        if at + peak > limit {
            return (i, at);
        }
        at += size;
    }
    (n, at)
}

/// The reply to `packet` written into `out`, and its length, if the fast path answers it.
/// The same bytes as `answer::answer` over UDP: the question as the client spelled it,
/// every record when they fit, else TC with as many whole records as fit in the room our
/// OPT leaves (512 bytes without EDNS, the client's size within 512..=4096 with it).
pub fn answer(table: &Table, packet: &[u8], out: &mut [u8; REPLY_MAX]) -> Option<usize> {
    let mut key = [0u8; NAME_MAX];
    let (q, key_len) = parse(packet, &mut key)?;
    let tails = table.answers.get(&key[..key_len])?;
    // Internal names have IPv4 only: AAAA is NOERROR without records.
    let n = if q.qtype == TYPE_A {
        tails.len() / TAIL
    } else {
        0
    };
    let (limit, opt) = match q.edns {
        None => (UDP_PLAIN, 0),
        Some((size, _)) => (usize::from(size.clamp(UDP_PLAIN as u16, UDP_EDNS_MAX)), OPT),
    };
    let name = key_len + 1;
    let (count, tc, end) = match fitting(n, name, q.question_end, limit) {
        (all, end) if all == n && end + opt <= limit => (n, false, end),
        // As `answer::fit` does: as many as fit in the room the OPT leaves.
        _ => {
            let (count, end) = fitting(n, name, q.question_end, limit - opt);
            (count, true, end)
        }
    };
    out[..2].copy_from_slice(&packet[..2]);
    // QR, opcode 0, AA, TC, RD as asked; RA, rcode NOERROR.
    out[2] = 0x84 | if tc { 0x02 } else { 0 } | u8::from(q.rd);
    out[3] = 0x80;
    out[4..6].copy_from_slice(&1u16.to_be_bytes());
    out[6..8].copy_from_slice(&(count as u16).to_be_bytes());
    out[8..10].copy_from_slice(&[0, 0]);
    out[10..12].copy_from_slice(&u16::from(opt > 0).to_be_bytes());
    out[HEADER..q.question_end].copy_from_slice(&packet[HEADER..q.question_end]);
    let mut at = q.question_end;
    for (i, tail) in tails.chunks_exact(TAIL).take(count).enumerate() {
        if i < COMPRESSED_RECORDS {
            out[at..at + 2].copy_from_slice(&POINTER);
            at += 2;
        } else {
            // The name as the question spells it, case and all.
            out[at..at + name].copy_from_slice(&packet[HEADER..HEADER + name]);
            at += name;
        }
        out[at..at + TAIL].copy_from_slice(tail);
        at += TAIL;
    }
    debug_assert_eq!(at, end);
    if let Some((_, dnssec_ok)) = q.edns {
        let [s0, s1] = UDP_EDNS_MAX.to_be_bytes();
        let flags = if dnssec_ok { 0x80 } else { 0 };
        out[at..at + OPT].copy_from_slice(&[0, 0, TYPE_OPT as u8, s0, s1, 0, 0, flags, 0, 0, 0]);
        at += OPT;
    }
    Some(at)
}
