//! syschaos kernel programs. One module per hook family; this file only wires them up.
#![no_std]
#![no_main]
// Atomic fetch-add on map values (see inject.rs).
#![allow(internal_features)]
#![feature(core_intrinsics)]

mod http;
mod inject;
mod inject_cgroup_sock;
mod inject_fmod_ret;
mod inject_kprobe;
mod inject_lsm;
mod inject_signal;
mod inject_stop;
mod monitor;
mod monitor_slot;
mod regs;
mod trace;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
