//! Where an architecture's kernel `struct pt_regs` keeps a syscall's number and arguments. The
//! eBPF object holds no per-architecture code: the loader sets its `REGS_LAYOUT` global to the
//! layout of the architecture chaos-user was built for, so one object serves every one.

/// Byte offsets in the `struct pt_regs` that raw `sys_enter`/`sys_exit` tracepoints receive.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RegsLayout {
    /// The six syscall arguments as saved at entry.
    pub args: [u32; 6],
    /// The syscall number, read as a 32-bit signed integer (x86_64's `orig_rax` low half, which
    /// is what the kernel dispatches on; arm64's `s32 syscallno`); -1 for a skipped call.
    pub syscall_nr: u32,
    /// Start of 8 contiguous registers that hold all six arguments, read in one go.
    pub args_window: u32,
}

/// Registers in the window of [`RegsLayout::args_window`].
pub const ARGS_WINDOW_REGS: usize = 8;

impl RegsLayout {
    /// `r15 r14 r13 r12 rbp rbx r11 r10 r9 r8 rax rcx rdx rsi rdi orig_rax ...`; arguments in
    /// rdi, rsi, rdx, r10, r8, r9.
    pub const X86_64: Self = Self {
        args: [112, 104, 96, 56, 72, 64],
        syscall_nr: 120,
        args_window: 56,
    };
    /// `regs[31] sp pc pstate orig_x0 syscallno ...` (arch/arm64/include/asm/ptrace.h, 5.10
    /// to 6.12); arguments in x0..x5. x0 is overwritten by the return value at exit, but the
    /// arguments are only read at entry.
    pub const AARCH64: Self = Self {
        args: [0, 8, 16, 24, 32, 40],
        syscall_nr: 8 * 35,
        args_window: 0,
    };

    /// The layout of the architecture this crate is built for; None elsewhere.
    pub const fn native() -> Option<Self> {
        if cfg!(target_arch = "x86_64") {
            Some(Self::X86_64)
        } else if cfg!(target_arch = "aarch64") {
            Some(Self::AARCH64)
        } else {
            None
        }
    }

    /// Whether every argument is in the window (the eBPF side relies on it).
    pub const fn is_valid(&self) -> bool {
        let mut i = 0;
        while i < self.args.len() {
            let offset = self.args[i];
            if offset < self.args_window
                || !offset.is_multiple_of(8)
                || (offset - self.args_window) / 8 >= ARGS_WINDOW_REGS as u32
            {
                return false;
            }
            i += 1;
        }
        true
    }
}

const _: () = assert!(core::mem::size_of::<RegsLayout>() == 32);
const _: () = assert!(RegsLayout::X86_64.is_valid() && RegsLayout::AARCH64.is_valid());

// SAFETY: repr(C), Copy, eight u32 without padding.
#[cfg(feature = "user")]
unsafe impl aya::Pod for RegsLayout {}
