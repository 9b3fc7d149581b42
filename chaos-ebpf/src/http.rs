//! HTTP/1.x responses by status code, seen from outside: `cgroup_skb` programs on each target's
//! cgroup look at the first bytes of the TCP payload of the target's own packets. A request is a
//! segment coming in whose payload starts with a method; a response is a segment going out whose
//! payload starts with `HTTP/1.x NNN`. Latency runs from the request's arrival at the socket to
//! the response's departure from it.
//!
//! Why cgroup_skb and not the syscall buffers (as this module did before):
//! - Cost: it runs once per packet of the target's sockets only. The syscall hooks run for every
//!   call of every process on the host: on a busy server they cost 2 to 3 times what counting
//!   HTTP costs here (`cargo xtask bench http`), and `attach --no-syscalls` leaves only this.
//! - Coverage: it sees what went out however it was written (write, writev, sendmsg, sendfile,
//!   splice, io_uring) and keys connections by their addresses, so dup'ed fds and thread pools
//!   are alike.
//!
//! What it needs of the server, which servers do: the status line starts a segment (it is written
//! after the request was read, so nothing of the previous response waits in the send queue) and
//! is not split across writes. Pipelined responses that TCP sends in one segment count as one.
//! Retransmitted segments are recognized by their sequence number and not counted twice.
//! TLS is out of scope: encrypted bytes carry no status line.
use aya_ebpf::{
    helpers::{bpf_ktime_get_ns, bpf_skb_cgroup_id},
    macros::{cgroup_skb, map},
    maps::{LruHashMap, PerCpuHashMap},
    programs::SkBuffContext,
};
use chaos_common::{HttpKey, HttpStats, latency_bucket};

use crate::monitor::{get_or_zero, target_slot};

#[map]
static HTTP_RESPONSES: PerCpuHashMap<HttpKey, HttpStats> = PerCpuHashMap::with_max_entries(4096, 0);

/// The connection's addresses -> its last request and response. LRU: closed connections are
/// forgotten. Entries are rewritten in place: an LRU insert or delete costs far more.
#[map]
static HTTP_CONNECTIONS: LruHashMap<ConnectionKey, Connection> =
    LruHashMap::with_max_entries(65536, 0);

/// Taken from the headers, not the socket cookie: a request whose segment also completes the
/// handshake (its final ACK was lost) is filtered on the listening socket, not the connection's.
#[repr(C)]
#[derive(Clone, Copy)]
struct ConnectionKey {
    /// IPv4 addresses in the first word, IPv6 in all four.
    remote_addr: [u32; 4],
    local_addr: [u32; 4],
    remote_port: u16,
    local_port: u16,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct Connection {
    /// Arrival of the request not answered yet; 0: none.
    request_ns: u64,
    /// Sequence numbers of the segments that began the last request and the last response.
    request_seq: u32,
    response_seq: u32,
    /// `SEEN_REQUEST` | `SEEN_RESPONSE`: which of the two sequence numbers is meaningful.
    seen: u32,
    /// The target the socket belongs to, looked up once per connection; `NOT_A_TARGET` for
    /// sockets of a child cgroup of a target (the monitor counts exact cgroups only).
    slot: u32,
}

const NOT_A_TARGET: u32 = u32::MAX;

const SEEN_REQUEST: u32 = 1;
const SEEN_RESPONSE: u32 = 2;

/// Let the packet through: these programs only look.
const PASS: i32 = 1;

/// Shortest response start we look at: `HTTP/1.1 200`.
const STATUS_LINE_LEN: usize = 12;
/// Shortest request start we look at: a method's first four bytes.
const METHOD_LEN: usize = 4;

const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const IPPROTO_TCP: u8 = 6;
const IPV4_HEADER_LEN: usize = 20;
const IPV6_HEADER_LEN: usize = 40;
const TCP_HEADER_LEN: usize = 20;
const TCP_SYN: u8 = 0x02;
/// IPv6 header and the longest TCP header.
const MAX_HEADERS_LEN: usize = IPV6_HEADER_LEN + 60;

#[cgroup_skb(ingress)]
pub fn http_ingress(ctx: SkBuffContext) -> i32 {
    let Some(segment) = tcp_segment(&ctx, METHOD_LEN, Direction::In) else {
        return PASS;
    };
    if segment.opens_connection {
        forget(&segment);
    } else if let Some(head) = payload_head::<METHOD_LEN>(&ctx, segment.payload)
        && is_method(&head)
    {
        on_request(&ctx, &segment);
    }
    PASS
}

#[cgroup_skb(egress)]
pub fn http_egress(ctx: SkBuffContext) -> i32 {
    let Some(segment) = tcp_segment(&ctx, STATUS_LINE_LEN, Direction::Out) else {
        return PASS;
    };
    if segment.opens_connection {
        forget(&segment);
    } else if let Some(head) = payload_head::<STATUS_LINE_LEN>(&ctx, segment.payload)
        && let Some(code) = status_code(&head)
    {
        on_response(&ctx, &segment, code);
    }
    PASS
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Direction {
    In,
    Out,
}

struct Segment {
    connection: ConnectionKey,
    /// Offset of the TCP payload from the start of the IP header.
    payload: usize,
    seq: u32,
    /// A SYN: whatever we know of an earlier connection with these addresses is stale.
    opens_connection: bool,
}

/// The TCP segment in this packet if it carries at least `min` bytes of payload, or opens a
/// connection. The headers are read in place: they are in the linear part. IPv4 options and
/// IPv6 extension headers are not followed: TCP traffic carries neither in practice.
#[inline(always)]
fn tcp_segment(ctx: &SkBuffContext, min: usize, direction: Direction) -> Option<Segment> {
    let skb = ctx.skb.skb;
    let (len, protocol, data, data_end) = unsafe {
        let skb = &*skb;
        (
            skb.len as usize,
            u16::from_be(skb.protocol as u16),
            skb.data as usize,
            skb.data_end as usize,
        )
    };
    // Pure ACKs, the most common packets, stop here or at the data-offset check, before the
    // addresses are read.
    if len < IPV4_HEADER_LEN + TCP_HEADER_LEN + min {
        return None;
    }
    let tcp = match protocol {
        ETH_P_IP => {
            if data + IPV4_HEADER_LEN + TCP_HEADER_LEN > data_end {
                return None;
            }
            let version_ihl = unsafe { *(data as *const u8) };
            let next = unsafe { *((data + 9) as *const u8) };
            if version_ihl != 0x45 || next != IPPROTO_TCP {
                return None;
            }
            data + IPV4_HEADER_LEN
        }
        ETH_P_IPV6 => {
            if data + IPV6_HEADER_LEN + TCP_HEADER_LEN > data_end {
                return None;
            }
            if unsafe { *((data + 6) as *const u8) } != IPPROTO_TCP {
                return None;
            }
            data + IPV6_HEADER_LEN
        }
        _ => return None,
    };
    let data_offset = (unsafe { *((tcp + 12) as *const u8) } >> 4) as usize * 4;
    let opens_connection = unsafe { *((tcp + 13) as *const u8) } & TCP_SYN != 0;
    let payload = tcp - data + data_offset;
    if len < payload + min && !opens_connection {
        return None;
    }
    // Source and destination, in packet order.
    let addrs = if protocol == ETH_P_IP {
        let [source, destination] = unsafe { *((data + 12) as *const [u32; 2]) };
        [[source, 0, 0, 0], [destination, 0, 0, 0]]
    } else {
        unsafe { *((data + 8) as *const [[u32; 4]; 2]) }
    };
    let ports = unsafe { *(tcp as *const [u16; 2]) };
    let seq = u32::from_be(unsafe { *((tcp + 4) as *const u32) });
    let (remote, local) = match direction {
        Direction::In => (0, 1),
        Direction::Out => (1, 0),
    };
    let connection = ConnectionKey {
        remote_addr: addrs[remote],
        local_addr: addrs[local],
        remote_port: ports[remote],
        local_port: ports[local],
    };
    Some(Segment {
        connection,
        payload,
        seq,
        opens_connection,
    })
}

/// The first `N` bytes of the payload at `offset`: read in place when they are in the linear
/// part (small packets from a NIC), else with `bpf_skb_load_bytes` (loopback puts the payload in
/// page fragments).
#[inline(always)]
fn payload_head<const N: usize>(ctx: &SkBuffContext, offset: usize) -> Option<[u8; N]> {
    let (data, data_end) = unsafe {
        (
            (*ctx.skb.skb).data as usize,
            (*ctx.skb.skb).data_end as usize,
        )
    };
    // The bound keeps the verifier sure of the offset's range.
    if offset <= MAX_HEADERS_LEN && data + offset + N <= data_end {
        return Some(unsafe { *((data + offset) as *const [u8; N]) });
    }
    ctx.load::<[u8; N]>(offset).ok()
}

/// A new connection reuses these addresses (the LRU may still hold the last one's entry, with
/// its target and sequence numbers).
#[inline(always)]
fn forget(segment: &Segment) {
    let _ = HTTP_CONNECTIONS.remove(&segment.connection);
}

/// A request starts: remember when, unless this segment is a retransmission of the last one.
#[inline(always)]
fn on_request(ctx: &SkBuffContext, segment: &Segment) {
    let seq = segment.seq;
    let now = unsafe { bpf_ktime_get_ns() };
    match HTTP_CONNECTIONS.get_ptr_mut(&segment.connection) {
        Some(connection) => {
            let connection = unsafe { &mut *connection };
            if connection.seen & SEEN_REQUEST != 0 && connection.request_seq == seq {
                return;
            }
            connection.request_ns = now;
            connection.request_seq = seq;
            connection.seen |= SEEN_REQUEST;
        }
        None => {
            let connection = Connection {
                request_ns: now,
                request_seq: seq,
                response_seq: 0,
                seen: SEEN_REQUEST,
                slot: socket_slot(ctx),
            };
            let _ = HTTP_CONNECTIONS.insert(&segment.connection, &connection, 0);
        }
    }
}

/// A response goes out: count its code under the socket's target, and time it if its request
/// was seen. A retransmission of the last response is not counted again.
#[inline(always)]
fn on_response(ctx: &SkBuffContext, segment: &Segment, code: u32) {
    let seq = segment.seq;
    let (slot, request_ns) = match HTTP_CONNECTIONS.get_ptr_mut(&segment.connection) {
        Some(connection) => {
            let connection = unsafe { &mut *connection };
            if connection.seen & SEEN_RESPONSE != 0 && connection.response_seq == seq {
                return;
            }
            let request_ns = connection.request_ns;
            connection.request_ns = 0;
            connection.response_seq = seq;
            connection.seen |= SEEN_RESPONSE;
            (connection.slot, request_ns)
        }
        None => {
            // A connection opened before we attached (or forgotten by the LRU): remember the
            // response so that its retransmission is not counted.
            let connection = Connection {
                request_ns: 0,
                request_seq: 0,
                response_seq: seq,
                seen: SEEN_RESPONSE,
                slot: socket_slot(ctx),
            };
            let _ = HTTP_CONNECTIONS.insert(&segment.connection, &connection, 0);
            (connection.slot, 0)
        }
    };
    if slot == NOT_A_TARGET {
        return;
    }
    let Some(stats) = get_or_zero(&HTTP_RESPONSES, &HttpKey { slot, code }, &HttpStats::ZERO)
    else {
        return;
    };
    let stats = unsafe { &mut *stats };
    stats.responses += 1;
    if request_ns == 0 {
        return;
    }
    // TCP stamps the segment with its departure time (CLOCK_MONOTONIC, as bpf_ktime_get_ns):
    // reading it spares a helper call.
    let sent = match unsafe { (*ctx.skb.skb).tstamp } {
        0 => unsafe { bpf_ktime_get_ns() },
        departure => departure,
    };
    let elapsed = sent.saturating_sub(request_ns);
    stats.timed += 1;
    stats.sum_ns += elapsed;
    if let Some(bucket) = stats.hist.get_mut(latency_bucket(elapsed)) {
        *bucket += 1;
    }
}

/// The slot of the target whose cgroup the packet's socket belongs to. The socket's cgroup, not
/// the current task's: these programs can run in softirq context, on another task's time.
#[inline(always)]
fn socket_slot(ctx: &SkBuffContext) -> u32 {
    let cgroup_id = unsafe { bpf_skb_cgroup_id(ctx.skb.skb) };
    target_slot(cgroup_id).unwrap_or(NOT_A_TARGET)
}

/// `HTTP/1.0 404` / `HTTP/1.1 200` -> the code.
#[inline(always)]
fn status_code(head: &[u8; STATUS_LINE_LEN]) -> Option<u32> {
    if &head[..7] != b"HTTP/1." || head[8] != b' ' {
        return None;
    }
    let mut code = 0u32;
    for &digit in &head[9..12] {
        if !digit.is_ascii_digit() {
            return None;
        }
        code = code * 10 + (digit - b'0') as u32;
    }
    Some(code)
}

#[inline(always)]
fn is_method(head: &[u8; METHOD_LEN]) -> bool {
    matches!(
        head,
        b"GET " | b"POST" | b"PUT " | b"HEAD" | b"DELE" | b"PATC" | b"OPTI" | b"CONN" | b"TRAC"
    )
}
