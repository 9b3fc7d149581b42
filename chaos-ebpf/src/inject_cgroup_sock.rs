//! Engine `cgroup-sock`: cgroup socket programs on the target's own cgroup refuse the operation
//! and set the errno with `bpf_set_retval`: connect, bind, sendmsg/sendto with an address (UDP),
//! socket.
use aya_ebpf::{
    helpers::generated::bpf_set_retval,
    macros::{cgroup_sock, cgroup_sock_addr},
    programs::{SockAddrContext, SockContext},
};
use chaos_common::ENGINE_CGROUP_SOCK;

use crate::inject::take_pending;

/// 1 lets the operation go on; 0 refuses it, with the errno set by `bpf_set_retval`.
#[inline(always)]
fn verdict() -> i32 {
    match take_pending(ENGINE_CGROUP_SOCK) {
        Some(errno) => {
            unsafe { bpf_set_retval(-(errno as i32)) };
            0
        }
        None => 1,
    }
}

macro_rules! sock_addr_hook {
    ($name:ident, $attach:ident) => {
        #[cgroup_sock_addr($attach)]
        pub fn $name(_ctx: SockAddrContext) -> i32 {
            verdict()
        }
    };
}

sock_addr_hook!(inject_cgroup_sock_connect4, connect4);
sock_addr_hook!(inject_cgroup_sock_connect6, connect6);
sock_addr_hook!(inject_cgroup_sock_bind4, bind4);
sock_addr_hook!(inject_cgroup_sock_bind6, bind6);
sock_addr_hook!(inject_cgroup_sock_sendmsg4, sendmsg4);
sock_addr_hook!(inject_cgroup_sock_sendmsg6, sendmsg6);

#[cgroup_sock(sock_create)]
pub fn inject_cgroup_sock_create(_ctx: SockContext) -> i32 {
    verdict()
}
