//! nf_tables set-element batches over a long-lived netlink socket. An endpoint change is a
//! handful of element deletes and adds in one transaction; sending them on a socket that
//! stays open keeps the cost flat in the size of the table (the nft CLI lists the table
//! first) and off the kernel's RCU wait, which a closing nf_tables socket pays.

use netlink_packet_core::{NLM_F_ACK, NLM_F_CREATE, NLM_F_REQUEST, NetlinkMessage, NetlinkPayload};
use netlink_packet_netfilter::nftables::{
    DataAttribute, ListAttribute, NfTablesMessage, SetElementAttribute, SetElementList,
    SetElementMessage, Verdict, VerdictAttribute,
};
use netlink_packet_netfilter::none::ControlMessage;
use netlink_packet_netfilter::{NetfilterHeader, NetfilterMessage, NetfilterProtoFamily};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_NETFILTER};

/// `res_id` of batch begin/end: the nf_tables subsystem.
const NFNL_SUBSYS_NFTABLES: u16 = 10;

/// What a map element maps to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ElemData {
    Value(Vec<u8>),
    Goto(String),
}

/// One element change in a set or map of the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ElemOp {
    Add {
        set: &'static str,
        key: Vec<u8>,
        data: Option<ElemData>,
    },
    Delete {
        set: &'static str,
        key: Vec<u8>,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("netlink socket: {0}")]
    Io(#[from] std::io::Error),
    #[error("nf_tables refused the change to {set}: {source}")]
    Refused {
        set: String,
        #[source]
        source: std::io::Error,
    },
    #[error("nf_tables answered {got} of {want} messages")]
    Unanswered { got: usize, want: usize },
}

pub struct NftSocket {
    sock: Socket,
    seq: u32,
}

impl NftSocket {
    /// A socket in the calling thread's network namespace.
    pub fn open() -> std::io::Result<NftSocket> {
        let mut sock = Socket::new(NETLINK_NETFILTER)?;
        sock.bind_auto()?;
        sock.connect(&SocketAddr::new(0, 0))?;
        sock.set_cap_ack(true)?;
        // Room for the answers of a large batch (one per message, errors with context).
        let _ = sock.set_rx_buf_sz(4 << 20);
        sock.set_ext_ack(true)?;
        // The kernel processes a batch inside the send and queues every answer before
        // it returns, so reads never need to wait.
        sock.set_non_blocking(true)?;
        Ok(NftSocket { sock, seq: 1 })
    }

    /// A socket in the network namespace at `path` (`/run/netns/NAME`), opened from a
    /// thread that entered it; the socket stays bound to that namespace.
    pub fn open_in(path: &str) -> std::io::Result<NftSocket> {
        let path = path.to_string();
        std::thread::spawn(move || {
            let ns = std::fs::File::open(&path)?;
            nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(std::io::Error::from)?;
            NftSocket::open()
        })
        .join()
        .unwrap_or_else(|_| Err(std::io::Error::other("namespace thread panicked")))
    }

    fn push(&mut self, buf: &mut Vec<u8>, mut msg: NetlinkMessage<NetfilterMessage>, flags: u16) {
        msg.header.flags = flags;
        msg.header.sequence_number = self.seq;
        self.seq = self.seq.wrapping_add(1);
        msg.finalize();
        let start = buf.len();
        buf.resize(start + msg.buffer_len(), 0);
        msg.serialize(&mut buf[start..]);
    }

    /// Applies `ops` to the IPv4 table `table` as one transaction: all or nothing.
    pub fn apply(&mut self, table: &str, ops: &[ElemOp]) -> Result<(), NetlinkError> {
        if ops.is_empty() {
            return Ok(());
        }
        let control = |m: ControlMessage| {
            NetlinkMessage::from(NetfilterMessage::new(
                NetfilterHeader::new(NetfilterProtoFamily::Unspec, 0, NFNL_SUBSYS_NFTABLES),
                m,
            ))
        };
        let mut buf = Vec::with_capacity(96 * ops.len() + 64);
        self.push(&mut buf, control(ControlMessage::BatchBegin), NLM_F_REQUEST);
        let first = self.seq;
        // One message per run of the same operation on the same set, each carrying all
        // its elements: a handful of messages (and acks) whatever the number of changes.
        // Order is kept: every delete comes before every add.
        let mut groups: Vec<(bool, &'static str, Vec<ListAttribute<SetElementAttribute>>)> =
            Vec::new();
        for op in ops {
            let (set, elem, add) = match op {
                ElemOp::Add { set, key, data } => {
                    let mut attrs =
                        vec![SetElementAttribute::Key(DataAttribute::Value(key.clone()))];
                    match data {
                        Some(ElemData::Value(v)) => {
                            attrs.push(SetElementAttribute::Data(DataAttribute::Value(v.clone())))
                        }
                        Some(ElemData::Goto(chain)) => {
                            attrs.push(SetElementAttribute::Data(DataAttribute::Verdict(vec![
                                VerdictAttribute::Code(Verdict::Goto),
                                VerdictAttribute::Chain(chain.clone()),
                            ])))
                        }
                        None => {}
                    }
                    (*set, attrs, true)
                }
                ElemOp::Delete { set, key } => (
                    *set,
                    vec![SetElementAttribute::Key(DataAttribute::Value(key.clone()))],
                    false,
                ),
            };
            match groups.last_mut() {
                Some((a, s, elems)) if *a == add && *s == set => {
                    elems.push(ListAttribute::Element(elem))
                }
                _ => groups.push((add, set, vec![ListAttribute::Element(elem)])),
            }
        }
        let mut sets = Vec::with_capacity(groups.len());
        for (add, set, elems) in groups {
            let body = SetElementMessage {
                attributes: vec![
                    SetElementList::Table(table.to_string()),
                    SetElementList::Set(set.to_string()),
                    SetElementList::Elements(elems),
                ],
            };
            let inner = if add {
                NfTablesMessage::NewSetElement(body)
            } else {
                NfTablesMessage::DeleteSetElement(body)
            };
            let msg = NetlinkMessage::from(NetfilterMessage::new(
                NetfilterHeader::new(NetfilterProtoFamily::IPv4, 0, 0),
                inner,
            ));
            let flags = NLM_F_REQUEST | NLM_F_ACK | if add { NLM_F_CREATE } else { 0 };
            self.push(&mut buf, msg, flags);
            sets.push(set);
        }
        self.push(&mut buf, control(ControlMessage::BatchEnd), NLM_F_REQUEST);
        self.sock.send(&buf, 0)?;
        self.read_acks(first, &sets)
    }

    /// The kernel answers every message flagged for an ACK, success or not, before the
    /// send returns; read until each has its answer.
    fn read_acks(&mut self, first: u32, sets: &[&str]) -> Result<(), NetlinkError> {
        let want = sets.len();
        let mut got = 0;
        let mut failure = None;
        let mut buf = vec![0u8; 1 << 16];
        while got < want {
            let n = match self.sock.recv(&mut &mut buf[..], 0) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e.into()),
            };
            let mut off = 0;
            while off < n {
                let Ok(msg) = NetlinkMessage::<NetfilterMessage>::deserialize(&buf[off..n]) else {
                    break;
                };
                let len = msg.header.length as usize;
                if len == 0 {
                    break;
                }
                off += (len + 3) & !3;
                if let NetlinkPayload::Error(e) = msg.payload {
                    got += 1;
                    if let Some(code) = e.code
                        && failure.is_none()
                    {
                        let idx = msg.header.sequence_number.wrapping_sub(first) as usize;
                        failure = Some(NetlinkError::Refused {
                            set: sets.get(idx).copied().unwrap_or("?").to_string(),
                            source: std::io::Error::from_raw_os_error(-code.get()),
                        });
                    }
                }
            }
        }
        if let Some(f) = failure {
            return Err(f);
        }
        if got < want {
            return Err(NetlinkError::Unanswered { got, want });
        }
        Ok(())
    }
}
