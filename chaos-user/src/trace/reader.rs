//! Reading the trace ring buffer as the kernel fills it, and printing each call.
use std::io::Write as _;

use aya::maps::{MapData, RingBuf};
use chaos_common::TraceEvent;
use tokio::io::unix::AsyncFd;

use super::{TraceLine, monotonic_to_wall_ns};

pub struct TraceReader {
    ring: AsyncFd<RingBuf<MapData>>,
    json: bool,
    offset_ns: i128,
    pub shown: u64,
}

impl TraceReader {
    pub fn new(ring: RingBuf<MapData>, json: bool) -> anyhow::Result<Self> {
        // SAFETY: the RingBuf owns its map fd, which stays open and the same until it is dropped
        // with this AsyncFd.
        let ring = unsafe { AsyncFd::register(ring) }.map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(Self {
            ring,
            json,
            offset_ns: monotonic_to_wall_ns(),
            shown: 0,
        })
    }

    /// Waits for events, then prints all there are. `label` names a target by slot.
    pub async fn print_next(&mut self, label: impl Fn(u32) -> String) -> anyhow::Result<()> {
        let mut guard = self.ring.readable_mut().await?;
        let ring = guard.get_inner_mut();
        let mut stdout = std::io::stdout().lock();
        while let Some(item) = ring.next() {
            if item.len() < size_of::<TraceEvent>() {
                continue;
            }
            // SAFETY: the kernel wrote a whole TraceEvent (checked length); read unaligned.
            let event: TraceEvent = unsafe { std::ptr::read_unaligned(item.as_ptr().cast()) };
            let line = TraceLine::new(&event, &label(event.slot), self.offset_ns);
            if self.json {
                writeln!(stdout, "{}", serde_json::to_string(&line)?)?;
            } else {
                writeln!(stdout, "{line}")?;
            }
            self.shown += 1;
        }
        stdout.flush()?;
        guard.clear_ready();
        Ok(())
    }
}
