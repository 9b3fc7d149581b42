//! Engine `lsm`: BPF LSM hooks return the errno, so the kernel refuses the operation the way a
//! security module would. Which syscall goes through which hook is in
//! `chaos-user/src/inject/lsm.rs`. Needs `bpf` in the active LSM list. Each program is named
//! `inject_lsm_<hook>`: the loader takes the hook from the name.
use aya_ebpf::{macros::lsm, programs::LsmContext};
use chaos_common::ENGINE_LSM;

use crate::inject::take_pending;

/// Defines the program for one hook. `ret` is the index of the hook's last argument: the verdict
/// of the BPF LSM programs before ours, which must not be overridden with "allow".
macro_rules! lsm_hook {
    ($name:ident, $hook:literal, ret = $ret:literal) => {
        #[lsm(hook = $hook)]
        pub fn $name(ctx: LsmContext) -> i32 {
            enforce(&ctx, $ret)
        }
    };
}

#[inline(always)]
fn enforce(ctx: &LsmContext, ret_index: usize) -> i32 {
    let previous: i32 = ctx.arg(ret_index);
    if previous != 0 {
        return previous;
    }
    match take_pending(ENGINE_LSM) {
        // The verifier must see R0 in [-4095, 0]. It loses the range of a negation (6.12), and
        // LLVM rewrites a bound check after it, so: bound the errno, then subtract it from a
        // zero it cannot fold.
        Some(errno) if errno <= 4095 => {
            let zero = unsafe { core::ptr::read_volatile(&0i32) };
            zero - errno as i32
        }
        _ => 0,
    }
}

lsm_hook!(inject_lsm_file_open, "file_open", ret = 1);
lsm_hook!(inject_lsm_file_permission, "file_permission", ret = 2);
lsm_hook!(inject_lsm_socket_connect, "socket_connect", ret = 3);
lsm_hook!(inject_lsm_socket_bind, "socket_bind", ret = 3);
lsm_hook!(inject_lsm_socket_sendmsg, "socket_sendmsg", ret = 3);
lsm_hook!(inject_lsm_socket_recvmsg, "socket_recvmsg", ret = 4);
lsm_hook!(inject_lsm_inode_create, "inode_create", ret = 3);
lsm_hook!(inject_lsm_inode_unlink, "inode_unlink", ret = 2);
lsm_hook!(inject_lsm_inode_mkdir, "inode_mkdir", ret = 3);
lsm_hook!(inject_lsm_inode_rmdir, "inode_rmdir", ret = 2);
lsm_hook!(inject_lsm_inode_rename, "inode_rename", ret = 4);
lsm_hook!(inject_lsm_mmap_file, "mmap_file", ret = 4);
lsm_hook!(inject_lsm_task_alloc, "task_alloc", ret = 2);
lsm_hook!(
    inject_lsm_bprm_check_security,
    "bprm_check_security",
    ret = 1
);
