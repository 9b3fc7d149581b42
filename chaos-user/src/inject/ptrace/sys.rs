//! The system interface of the ptrace engine: ptrace requests (nix where it has them, libc for
//! the ones that carry raw signal numbers, which nix's `Signal` cannot hold), raw wait statuses,
//! and the per-thread wake-up timer that interrupts a blocking `waitpid`.
use std::{cell::Cell, io::IoSliceMut, ptr};

use nix::{
    errno::Errno,
    sys::{
        ptrace::{self, Options},
        uio::{RemoteIoVec, process_vm_readv},
    },
    unistd::Pid,
};

/// What the engine asks of every tracee. Never `PTRACE_O_EXITKILL`: if chaos-user dies, the
/// kernel detaches the tracees and they run on.
pub fn options() -> Options {
    Options::PTRACE_O_TRACESYSGOOD
        | Options::PTRACE_O_TRACEFORK
        | Options::PTRACE_O_TRACEVFORK
        | Options::PTRACE_O_TRACECLONE
        | Options::PTRACE_O_TRACEEXEC
}

fn pid(tid: i32) -> Pid {
    Pid::from_raw(tid)
}

pub fn seize(tid: i32) -> Result<(), Errno> {
    ptrace::seize(pid(tid), options())
}

pub fn interrupt(tid: i32) -> Result<(), Errno> {
    ptrace::interrupt(pid(tid))
}

/// The new thread's id after a fork/clone/vfork stop, the former thread id after an exec stop.
pub fn event_message(tid: i32) -> Result<i32, Errno> {
    ptrace::getevent(pid(tid)).map(|message| message as i32)
}

fn request(
    request: libc::c_int,
    tid: i32,
    addr: usize,
    data: usize,
) -> Result<libc::c_long, Errno> {
    // SAFETY: the requests used here read or write only the tracee, or the buffer `data` points
    // to, which the caller sized for the request.
    let result = unsafe {
        libc::ptrace(
            request as _,
            tid,
            addr as *mut libc::c_void,
            data as *mut libc::c_void,
        )
    };
    Errno::result(result)
}

thread_local! {
    /// Whether this tracer thread's tracees stop at every syscall (engine ptrace), or only at
    /// signals (engine stop alone: PTRACE_CONT, so their calls cost nothing here).
    static SYSCALL_STOPS: Cell<bool> = const { Cell::new(true) };
}

/// Sets how [`resume`] resumes the tracees of the calling (tracer) thread.
pub fn set_syscall_stops(on: bool) {
    SYSCALL_STOPS.set(on);
}

/// Resumes a stopped tracee up to its next syscall stop (or, without syscall stops, its next
/// signal), delivering `signal` (0: none).
pub fn resume(tid: i32, signal: i32) -> Result<(), Errno> {
    let how = if SYSCALL_STOPS.get() {
        libc::PTRACE_SYSCALL
    } else {
        libc::PTRACE_CONT
    };
    request(how as _, tid, 0, signal as usize).map(drop)
}

/// Lets a tracee in group-stop stay stopped, reporting the SIGCONT that ends it.
pub fn listen(tid: i32) -> Result<(), Errno> {
    request(libc::PTRACE_LISTEN as _, tid, 0, 0).map(drop)
}

/// Detaches a stopped tracee, delivering `signal` (0: none).
pub fn detach(tid: i32, signal: i32) -> Result<(), Errno> {
    request(libc::PTRACE_DETACH as _, tid, 0, signal as usize).map(drop)
}

/// What a restartable call returns when a signal interrupts it (kernel-internal codes, never
/// seen by the application): ERESTARTSYS, ERESTARTNOINTR, ERESTARTNOHAND, ERESTART_RESTARTBLOCK.
pub const RESTART_CODES: [i64; 4] = [512, 513, 514, 516];

/// The tracee's registers, where they differ between architectures.
#[cfg(target_arch = "x86_64")]
mod regs {
    use std::mem::offset_of;

    use nix::{errno::Errno, sys::ptrace, unistd::Pid};

    /// `AUDIT_ARCH_X86_64`: 64-bit tracees; 32-bit ones have another syscall table.
    const AUDIT_ARCH: u32 = 0xc000_003e;
    /// x32 syscalls have this bit set in their number.
    const FOREIGN_SYSCALL_BIT: u64 = 0x4000_0000;

    /// Whether a call (`struct ptrace_syscall_info`'s arch and nr) is of the native table.
    pub fn native(arch: u32, nr: u64) -> bool {
        arch == AUDIT_ARCH && nr & FOREIGN_SYSCALL_BIT == 0
    }

    /// Makes the call at this syscall-entry stop invalid (`orig_rax` = -1).
    pub fn skip_call(pid: Pid) -> Result<(), Errno> {
        let offset = offset_of!(libc::user_regs_struct, orig_rax);
        ptrace::write_user(pid, offset as _, -1)
    }

    pub fn set_return(pid: Pid, value: i64) -> Result<(), Errno> {
        let offset = offset_of!(libc::user_regs_struct, rax);
        ptrace::write_user(pid, offset as _, value as libc::c_long)
    }

    /// At a signal-delivery-stop, rax still holds what the call returned: the kernel rewinds a
    /// restartable call after the stop, and only if rax still asks for it.
    pub fn return_value(pid: Pid, _recorded: i64) -> Result<i64, Errno> {
        Ok(ptrace::getregs(pid)?.rax as i64)
    }

    /// -errno in rax: the kernel then restarts nothing.
    pub fn fail_at_signal_stop(pid: Pid, value: i64, _returned: i64) -> Result<(), Errno> {
        set_return(pid, value)
    }

    /// Issues the call again: the syscall number back in rax, the instruction pointer back over
    /// the 2-byte `syscall` instruction (what the kernel does for a restarted call).
    pub fn reissue(pid: Pid, _returned: i64, _arg0: u64) -> Result<(), Errno> {
        let mut regs = ptrace::getregs(pid)?;
        regs.rax = regs.orig_rax;
        regs.rip -= 2;
        ptrace::setregs(pid, regs)
    }

    /// The re-issued call enters under its own number ([`reissue`] puts it back).
    pub fn reenters_as_itself(_returned: i64) -> bool {
        true
    }
}

/// arm64: the general registers through PTRACE_GETREGSET/SETREGSET (NT_PRSTATUS, what nix's
/// getregs/setregs do there; no PEEKUSER), the syscall number through NT_ARM_SYSTEM_CALL.
#[cfg(target_arch = "aarch64")]
mod regs {
    use nix::{errno::Errno, sys::ptrace, unistd::Pid};

    use super::RESTART_CODES;

    /// `AUDIT_ARCH_AARCH64`: 32-bit (compat) tracees have another table.
    const AUDIT_ARCH: u32 = 0xc000_00b7;
    /// The regset of the syscall number (an int), writable at a syscall-entry stop.
    const NT_ARM_SYSTEM_CALL: usize = 0x404;
    /// `svc #0`, the instruction a call is issued by.
    const SVC_LEN: u64 = 4;
    const ERESTART_RESTARTBLOCK: i64 = 516;

    pub fn native(arch: u32, _nr: u64) -> bool {
        arch == AUDIT_ARCH
    }

    /// Syscall number -1, and x0 = -ENOSYS: arm64 (unlike x86) leaves x0, the first argument,
    /// as the skipped call's return value, which chaos-user killed between the two stops would
    /// leave behind.
    pub fn skip_call(pid: Pid) -> Result<(), Errno> {
        set_return(pid, -i64::from(libc::ENOSYS))?;
        let mut nr: libc::c_int = -1;
        let iov = libc::iovec {
            iov_base: std::ptr::from_mut(&mut nr).cast(),
            iov_len: size_of::<libc::c_int>(),
        };
        super::request(
            libc::PTRACE_SETREGSET as _,
            pid.as_raw(),
            NT_ARM_SYSTEM_CALL,
            std::ptr::from_ref(&iov) as usize,
        )
        .map(drop)
    }

    /// x0. At a syscall stop the kernel puts x7 back after the stop, so writing the whole set
    /// back does not disturb it.
    pub fn set_return(pid: Pid, value: i64) -> Result<(), Errno> {
        let mut regs = ptrace::getregs(pid)?;
        regs.regs[0] = value as u64;
        ptrace::setregs(pid, regs)
    }

    /// Before the signal-delivery-stop the kernel has rewound a restartable call (x0 back to
    /// its first argument, pc back over `svc`): x0 no longer says, what the kernel's `sys_exit`
    /// program recorded does.
    pub fn return_value(_pid: Pid, recorded: i64) -> Result<i64, Errno> {
        Ok(recorded)
    }

    /// x0 = -errno, and past the `svc` again if the kernel rewound the call (then it restarts
    /// nothing: pc is no longer where it left it).
    pub fn fail_at_signal_stop(pid: Pid, value: i64, returned: i64) -> Result<(), Errno> {
        let mut regs = ptrace::getregs(pid)?;
        regs.regs[0] = value as u64;
        if RESTART_CODES.contains(&-returned) {
            regs.pc += SVC_LEN;
        }
        ptrace::setregs(pid, regs)
    }

    /// A call the kernel rewound is re-issued as it is; one that returned -EINTR (not
    /// restartable: epoll_wait, sigtimedwait...) gets its first argument back in x0 and pc back
    /// over the `svc` (x8, the syscall number, survives the call).
    pub fn reissue(pid: Pid, returned: i64, arg0: u64) -> Result<(), Errno> {
        if RESTART_CODES.contains(&-returned) {
            return Ok(());
        }
        let mut regs = ptrace::getregs(pid)?;
        regs.regs[0] = arg0;
        regs.pc -= SVC_LEN;
        ptrace::setregs(pid, regs)
    }

    /// A call that returned -ERESTART_RESTARTBLOCK (nanosleep, poll, futex with a timeout...)
    /// goes on as `restart_syscall`, which the kernel substitutes after the stop.
    pub fn reenters_as_itself(returned: i64) -> bool {
        -returned != ERESTART_RESTARTBLOCK
    }
}

/// Makes the call at this syscall-entry stop invalid: the kernel skips it, and it returns -ENOSYS
/// unless the exit stop sets the return value ([`set_return`]). The target's seccomp filter runs
/// after the entry stop and sets its own value for the invalid number (Docker's: -ENOSYS, seen
/// when chaos-user was killed between the two stops), so on x86 setting it here already would not
/// help; arm64 needs it (see its `regs::skip_call`).
pub fn skip_call(tid: i32) -> Result<(), Errno> {
    regs::skip_call(pid(tid))
}

/// Sets the value the call returns, at its syscall-exit stop.
pub fn set_return(tid: i32, value: i64) -> Result<(), Errno> {
    regs::set_return(pid(tid), value)
}

/// What the call the tracee stopped after (at a signal-delivery-stop) returned, kernel-internal
/// restart codes included; `recorded`: what the kernel's `sys_exit` program saw it return.
pub fn return_value(tid: i32, recorded: i64) -> Result<i64, Errno> {
    regs::return_value(pid(tid), recorded)
}

/// At a signal-delivery-stop after a call that `returned` this: the call returns `value`.
pub fn fail_at_signal_stop(tid: i32, value: i64, returned: i64) -> Result<(), Errno> {
    regs::fail_at_signal_stop(pid(tid), value, returned)
}

/// Makes the call the tracee stopped after (which `returned` this; `arg0`: its first argument)
/// be issued again when it resumes.
pub fn reissue(tid: i32, returned: i64, arg0: u64) -> Result<(), Errno> {
    regs::reissue(pid(tid), returned, arg0)
}

/// Whether a call that `returned` this and is re-issued enters again under its own number.
pub fn reenters_as_itself(returned: i64) -> bool {
    regs::reenters_as_itself(returned)
}

const PTRACE_GET_SYSCALL_INFO: libc::c_int = 0x420e;
const SYSCALL_INFO_ENTRY: u8 = 1;
const SYSCALL_INFO_EXIT: u8 = 2;

/// `struct ptrace_syscall_info` (kernel 5.3+), entry variant.
#[repr(C)]
#[derive(Default)]
pub struct SyscallInfo {
    op: u8,
    _pad: [u8; 3],
    arch: u32,
    _instruction_pointer: u64,
    _stack_pointer: u64,
    pub nr: u64,
    pub args: [u64; 6],
    _rest: u32,
}

pub enum Stop {
    /// A syscall-entry stop of a native 64-bit call.
    Entry,
    Exit,
    /// An entry the rules do not apply to (32-bit or x32 calls), or no syscall at all.
    Other,
}

/// What the tracee at this syscall stop is doing: one request, no allocation.
pub fn syscall_info(tid: i32, info: &mut SyscallInfo) -> Result<Stop, Errno> {
    request(
        PTRACE_GET_SYSCALL_INFO,
        tid,
        size_of::<SyscallInfo>(),
        ptr::from_mut(info) as usize,
    )?;
    Ok(match info.op {
        SYSCALL_INFO_ENTRY if regs::native(info.arch, info.nr) => Stop::Entry,
        SYSCALL_INFO_EXIT => Stop::Exit,
        _ => Stop::Other,
    })
}

/// Whether the string at `address` in the tracee starts with `prefix`: one process_vm_readv of
/// `prefix.len()` bytes into `buffer`, or word by word where the kernel has no process_vm_readv.
pub fn starts_with(tid: i32, address: u64, prefix: &[u8], buffer: &mut [u8]) -> bool {
    let buffer = &mut buffer[..prefix.len()];
    let remote = [RemoteIoVec {
        base: address as usize,
        len: prefix.len(),
    }];
    match process_vm_readv(pid(tid), &mut [IoSliceMut::new(buffer)], &remote) {
        Ok(n) => n == prefix.len() && buffer == prefix,
        // A kernel without CONFIG_CROSS_MEMORY_ATTACH (the override test kernel).
        Err(Errno::ENOSYS) => peek_starts_with(tid, address, prefix),
        Err(_) => false,
    }
}

/// `starts_with` through PTRACE_PEEKDATA, one aligned word at a time: an aligned word never
/// crosses a page, so no word read faults where the bytes we want are mapped.
fn peek_starts_with(tid: i32, address: u64, prefix: &[u8]) -> bool {
    const WORD: u64 = size_of::<libc::c_long>() as u64;
    let end = address + prefix.len() as u64;
    let mut word_at = address & !(WORD - 1);
    while word_at < end {
        let Ok(word) = ptrace::read(pid(tid), word_at as ptrace::AddressType) else {
            return false;
        };
        for (at, byte) in (word_at..).zip(word.to_ne_bytes()) {
            if (address..end).contains(&at) && prefix[(at - address) as usize] != byte {
                return false;
            }
        }
        word_at += WORD;
    }
    true
}

/// A raw wait status, decoded as ptrace(2) describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// The thread is gone (exited or killed).
    Gone,
    /// Syscall-entry or -exit stop (`SIGTRAP | 0x80` with PTRACE_O_TRACESYSGOOD).
    Syscall,
    /// PTRACE_EVENT_FORK / VFORK / CLONE: a new tracee.
    NewChild,
    /// PTRACE_EVENT_EXEC.
    Exec,
    /// PTRACE_EVENT_STOP with a stop signal: group-stop.
    GroupStop,
    /// PTRACE_EVENT_STOP with SIGTRAP: after PTRACE_INTERRUPT, a new child's first stop, or the
    /// end of a group-stop (SIGCONT) while listening.
    Interrupted,
    /// Another PTRACE_EVENT_* (not requested; resumed as is).
    Unrequested,
    /// Signal-delivery-stop: the signal is delivered when the tracee is resumed with it.
    Signal(i32),
}

impl Event {
    pub fn decode(status: i32) -> Self {
        if libc::WIFEXITED(status) || libc::WIFSIGNALED(status) {
            return Event::Gone;
        }
        if !libc::WIFSTOPPED(status) {
            return Event::Unrequested;
        }
        let signal = (status >> 8) & 0xff;
        match (status >> 16) & 0xff {
            0 if signal == libc::SIGTRAP | 0x80 => Event::Syscall,
            0 => Event::Signal(signal),
            libc::PTRACE_EVENT_FORK | libc::PTRACE_EVENT_VFORK | libc::PTRACE_EVENT_CLONE => {
                Event::NewChild
            }
            libc::PTRACE_EVENT_EXEC => Event::Exec,
            libc::PTRACE_EVENT_STOP => match signal {
                libc::SIGSTOP | libc::SIGTSTP | libc::SIGTTIN | libc::SIGTTOU => Event::GroupStop,
                _ => Event::Interrupted,
            },
            _ => Event::Unrequested,
        }
    }
}

/// Waits for the next event of any tracee of this thread (`__WNOTHREAD`: other threads of
/// chaos-user keep theirs). EINTR when the wake-up timer or a stop request fired.
pub fn wait(nohang: bool) -> Result<(i32, i32), Errno> {
    let mut status = 0;
    let flags = libc::__WALL | libc::__WNOTHREAD | if nohang { libc::WNOHANG } else { 0 };
    // SAFETY: waitpid writes the status into our integer.
    let tid = unsafe { libc::waitpid(-1, &mut status, flags) };
    Errno::result(tid).map(|tid| (tid, status))
}

/// CLOCK_MONOTONIC in ns, the clock of `bpf_ktime_get_ns` and of rule expiry (a vDSO call).
pub fn now_ns() -> u64 {
    crate::ebpf::kernel_now_ns()
}

pub fn gettid() -> i32 {
    // SAFETY: no arguments.
    unsafe { libc::syscall(libc::SYS_gettid) as i32 }
}

/// The signal that interrupts the tracer thread's `waitpid`: a real-time one nothing else uses.
pub fn wake_signal() -> i32 {
    libc::SIGRTMAX() - 1
}

/// Interrupts the tracer thread's wait (from any thread).
pub fn wake(tracer_tid: i32) {
    // SAFETY: signals one thread of our own process; its handler does nothing.
    unsafe { libc::syscall(libc::SYS_tgkill, libc::getpid(), tracer_tid, wake_signal()) };
}

/// A CLOCK_MONOTONIC timer that signals the tracer thread, so a blocking `waitpid` returns
/// EINTR at the next deadline. Raw syscalls: glibc and musl disagree on `sigevent`.
pub struct WakeTimer {
    id: libc::c_int,
    armed_for: u64,
}

/// The kernel's `struct sigevent` with `SIGEV_THREAD_ID`.
#[repr(C)]
struct KernelSigevent {
    value: u64,
    signo: libc::c_int,
    notify: libc::c_int,
    tid: libc::c_int,
    _pad: [libc::c_int; 11],
}

/// After the deadline the timer repeats at this period until re-armed, so a signal that lands
/// just before `waitpid` blocks costs at most this much lateness.
const REFIRE_NS: u64 = 1_000_000;

impl WakeTimer {
    /// For the calling thread: installs the (empty) handler, unblocks the signal, creates the timer.
    pub fn new() -> Result<Self, Errno> {
        extern "C" fn nothing(_: libc::c_int) {}
        let signal = wake_signal();
        // SAFETY: sigaction with a handler that does nothing (and no SA_RESTART, so waitpid
        // returns EINTR); the masks are plain data.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = nothing as *const () as libc::sighandler_t;
            libc::sigemptyset(&mut action.sa_mask);
            Errno::result(libc::sigaction(signal, &action, ptr::null_mut()))?;
            let mut mask: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut mask);
            libc::sigaddset(&mut mask, signal);
            libc::pthread_sigmask(libc::SIG_UNBLOCK, &mask, ptr::null_mut());
            // The session's SIGINT/SIGTERM belong to the async runtime, not to this thread.
            libc::sigemptyset(&mut mask);
            libc::sigaddset(&mut mask, libc::SIGINT);
            libc::sigaddset(&mut mask, libc::SIGTERM);
            libc::pthread_sigmask(libc::SIG_BLOCK, &mask, ptr::null_mut());
        }
        let mut event = KernelSigevent {
            value: 0,
            signo: signal,
            notify: libc::SIGEV_THREAD_ID,
            tid: gettid(),
            _pad: [0; 11],
        };
        let mut id: libc::c_int = 0;
        // SAFETY: the kernel reads the event and writes the timer id.
        let result = unsafe {
            libc::syscall(
                libc::SYS_timer_create,
                libc::CLOCK_MONOTONIC,
                &mut event,
                &mut id,
            )
        };
        Errno::result(result)?;
        Ok(Self { id, armed_for: 0 })
    }

    /// Fires at `deadline_ns` (CLOCK_MONOTONIC), then every millisecond until re-armed.
    /// A no-op when already armed for that deadline.
    pub fn arm(&mut self, deadline_ns: u64) {
        if self.armed_for == deadline_ns {
            return;
        }
        self.armed_for = deadline_ns;
        let spec = libc::itimerspec {
            it_interval: timespec(REFIRE_NS),
            it_value: timespec(deadline_ns.max(1)),
        };
        // SAFETY: the kernel reads the spec.
        unsafe {
            libc::syscall(
                libc::SYS_timer_settime,
                self.id,
                libc::TIMER_ABSTIME,
                &spec,
                ptr::null_mut::<libc::itimerspec>(),
            )
        };
    }
}

impl Drop for WakeTimer {
    fn drop(&mut self) {
        // SAFETY: deletes our own timer.
        unsafe { libc::syscall(libc::SYS_timer_delete, self.id) };
    }
}

fn timespec(ns: u64) -> libc::timespec {
    libc::timespec {
        tv_sec: (ns / 1_000_000_000) as _,
        tv_nsec: (ns % 1_000_000_000) as _,
    }
}

/// Sleeps until a signal (the wake-up timer) arrives: when there is no tracee to wait for.
pub fn pause() {
    // SAFETY: returns when a handler ran.
    unsafe { libc::pause() };
}

/// One field of `/proc/TID/status` (`TracerPid`, `Tgid`, `State`...).
pub fn status_field(tid: i32, field: &str) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{tid}/status")).ok()?;
    text.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        (key == field).then(|| value.trim().to_owned())
    })
}

/// The state letter of `/proc/TID/stat` (R, S, D, t, T, Z...).
pub fn state(tid: i32) -> Option<char> {
    let text = std::fs::read_to_string(format!("/proc/{tid}/stat")).ok()?;
    text.rsplit_once(')')?.1.trim_start().chars().next()
}

#[cfg(test)]
mod tests {
    use std::mem::offset_of;

    use super::*;

    fn stopped(signal: i32, event: i32) -> i32 {
        (event << 16) | (signal << 8) | 0x7f
    }

    #[test]
    fn decodes_ptrace_stops() {
        assert_eq!(
            Event::decode(stopped(libc::SIGTRAP | 0x80, 0)),
            Event::Syscall
        );
        assert_eq!(
            Event::decode(stopped(libc::SIGUSR1, 0)),
            Event::Signal(libc::SIGUSR1)
        );
        assert_eq!(Event::decode(stopped(34, 0)), Event::Signal(34));
        assert_eq!(
            Event::decode(stopped(libc::SIGTRAP, libc::PTRACE_EVENT_CLONE)),
            Event::NewChild
        );
        assert_eq!(
            Event::decode(stopped(libc::SIGTRAP, libc::PTRACE_EVENT_EXEC)),
            Event::Exec
        );
        assert_eq!(
            Event::decode(stopped(libc::SIGSTOP, libc::PTRACE_EVENT_STOP)),
            Event::GroupStop
        );
        assert_eq!(
            Event::decode(stopped(libc::SIGTRAP, libc::PTRACE_EVENT_STOP)),
            Event::Interrupted
        );
        assert_eq!(Event::decode(0), Event::Gone); // exited with 0
        assert_eq!(Event::decode(libc::SIGKILL), Event::Gone); // killed
    }

    #[test]
    fn syscall_info_matches_the_kernel_layout() {
        // struct ptrace_syscall_info: 24 bytes of header, the seccomp variant of the union (60).
        assert_eq!(size_of::<SyscallInfo>(), 88);
        assert_eq!(offset_of!(SyscallInfo, nr), 24);
    }
}
