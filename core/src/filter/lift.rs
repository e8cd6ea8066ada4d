//! The `filter` export's result, lifted out of the guest under a budget.
//!
//! Lifting copies what the guest returned into host memory. Guest memory is
//! capped, but a guest can point many strings of a `replace` at the same
//! bytes, so the host copy could be thousands of times larger than the
//! guest. These types lift exactly like the WIT `verdict` (the type check at
//! instantiation confirms it) and charge every list and string against a
//! per-call [`Budget`] *before* copying it, so a call that would go past
//! `filters.max_output_events` or [`OUTPUT_BYTES_CAP`](super::host) fails
//! having copied at most the budget.
//!
//! Wasmtime's `Lift` gives no way to pass state in, and a call lifts on the
//! thread that made it, so the budget lives in a thread-local set by
//! [`with_budget`] for the length of one call.

use std::cell::Cell;

use wasmtime::component::__internal::{CanonicalAbiInfo, InstanceType, InterfaceType, LiftContext};
use wasmtime::component::{ComponentType, Lift};
use wasmtime::{Result, ValRaw};

use super::sandbox::wit;

/// What one call may lift.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Budget {
    /// Events a `replace` may hold.
    pub events: usize,
    /// String bytes the whole result may hold.
    pub bytes: usize,
}

/// Which part of the budget a call went past.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Overrun {
    /// A `replace` of this many events.
    Events(usize),
    /// Strings over the byte budget.
    Bytes,
}

thread_local! {
    static REMAINING: Cell<Option<Budget>> = const { Cell::new(None) };
    static OVERRUN: Cell<Option<Overrun>> = const { Cell::new(None) };
}

/// Runs `call` (which lifts a [`FilterResult`]) under `budget`; says which
/// part of it the call went past, if it did (the call then failed).
pub(crate) fn with_budget<R>(budget: Budget, call: impl FnOnce() -> R) -> (R, Option<Overrun>) {
    REMAINING.set(Some(budget));
    OVERRUN.set(None);
    let result = call();
    REMAINING.set(None);
    (result, OVERRUN.take())
}

/// Charges a list of `events` events or `bytes` string bytes against the
/// budget, or records the overrun and fails.
fn charge(events: usize, bytes: usize) -> Result<()> {
    // No budget set (a call outside `with_budget`, e.g. a type check): the
    // limits are still the guest's own memory.
    let Some(mut left) = REMAINING.get() else {
        return Ok(());
    };
    if events > left.events {
        OVERRUN.set(Some(Overrun::Events(events)));
        wasmtime::bail!("a replace of {events} events is over the budget");
    }
    if bytes > left.bytes {
        OVERRUN.set(Some(Overrun::Bytes));
        wasmtime::bail!("the result's strings are over the byte budget");
    }
    left.bytes -= bytes;
    REMAINING.set(Some(left));
    Ok(())
}

/// The length word of a `(pointer, length)` pair lowered flat.
fn flat_len(src: &[ValRaw; 2]) -> usize {
    src[1].get_u32() as usize
}

/// The length word of a `(pointer, length)` pair in memory.
fn memory_len(bytes: &[u8]) -> usize {
    bytes
        .get(4..8)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map_or(0, |b| u32::from_le_bytes(b) as usize)
}

/// Code units of a lifted string's length word: the top bit is the
/// latin1+utf16 encoding's tag. A unit becomes at most 3 bytes on the host.
fn string_units(len: usize) -> usize {
    len & 0x7fff_ffff
}

/// A WIT `string`, charged against the budget before it is copied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BoundedString(pub String);

// SAFETY: every item forwards to `String`, whose ABI this is.
#[allow(unsafe_code)]
unsafe impl ComponentType for BoundedString {
    type Lower = <String as ComponentType>::Lower;
    const ABI: CanonicalAbiInfo = <String as ComponentType>::ABI;

    fn typecheck(ty: &InterfaceType, types: &InstanceType<'_>) -> Result<()> {
        <String as ComponentType>::typecheck(ty, types)
    }
}

// SAFETY: forwards to `String` after checking the length word.
#[allow(unsafe_code)]
unsafe impl Lift for BoundedString {
    fn linear_lift_from_flat(cx: &mut LiftContext<'_>, ty: InterfaceType, src: &Self::Lower) -> Result<Self> {
        charge(0, string_units(flat_len(src)))?;
        String::linear_lift_from_flat(cx, ty, src).map(Self)
    }

    fn linear_lift_from_memory(cx: &mut LiftContext<'_>, ty: InterfaceType, bytes: &[u8]) -> Result<Self> {
        charge(0, string_units(memory_len(bytes)))?;
        String::linear_lift_from_memory(cx, ty, bytes).map(Self)
    }
}

/// A `replace`'s `list<event>`, refused past the budget's events before any
/// is copied.
#[derive(Debug)]
pub(crate) struct BoundedEvents(pub Vec<EventOut>);

// SAFETY: every item forwards to `Vec<EventOut>`, whose ABI this is.
#[allow(unsafe_code)]
unsafe impl ComponentType for BoundedEvents {
    type Lower = <Vec<EventOut> as ComponentType>::Lower;
    const ABI: CanonicalAbiInfo = <Vec<EventOut> as ComponentType>::ABI;

    fn typecheck(ty: &InterfaceType, types: &InstanceType<'_>) -> Result<()> {
        <Vec<EventOut> as ComponentType>::typecheck(ty, types)
    }
}

// SAFETY: forwards to `Vec<EventOut>` after checking the length word.
#[allow(unsafe_code)]
unsafe impl Lift for BoundedEvents {
    fn linear_lift_from_flat(cx: &mut LiftContext<'_>, ty: InterfaceType, src: &Self::Lower) -> Result<Self> {
        charge(flat_len(src), 0)?;
        Vec::<EventOut>::linear_lift_from_flat(cx, ty, src).map(Self)
    }

    fn linear_lift_from_memory(cx: &mut LiftContext<'_>, ty: InterfaceType, bytes: &[u8]) -> Result<Self> {
        charge(memory_len(bytes), 0)?;
        Vec::<EventOut>::linear_lift_from_memory(cx, ty, bytes).map(Self)
    }
}

/// The WIT `event` record, lifted under the budget.
#[derive(Debug, ComponentType, Lift)]
#[component(record)]
pub(crate) struct EventOut {
    name: BoundedString,
    channel: BoundedString,
    #[component(name = "user-id")]
    user_id: Option<BoundedString>,
    #[component(name = "socket-id")]
    socket_id: Option<BoundedString>,
    event: Option<BoundedString>,
    data: Option<BoundedString>,
    #[component(name = "subscription-count")]
    subscription_count: Option<u64>,
    extra: Option<BoundedString>,
}

impl From<EventOut> for wit::Event {
    fn from(e: EventOut) -> Self {
        let text = |s: Option<BoundedString>| s.map(|s| s.0);
        wit::Event {
            name: e.name.0,
            channel: e.channel.0,
            user_id: text(e.user_id),
            socket_id: text(e.socket_id),
            event: text(e.event),
            data: text(e.data),
            subscription_count: e.subscription_count,
            extra: text(e.extra),
        }
    }
}

/// The WIT `batch` record of a `replace`.
#[derive(Debug, ComponentType, Lift)]
#[component(record)]
pub(crate) struct BatchOut {
    /// Lifted to match the WIT; a `replace` keeps the batch's own time.
    #[component(name = "time-ms")]
    #[allow(dead_code)]
    pub time_ms: u64,
    pub events: BoundedEvents,
}

/// The WIT `verdict` variant, lifted under the budget.
#[derive(Debug, ComponentType, Lift)]
#[component(variant)]
pub(crate) enum VerdictOut {
    #[component(name = "keep")]
    Keep,
    #[component(name = "drop")]
    Drop(BoundedString),
    // One index is 4 bytes in the guest and on the host: no amplification.
    #[component(name = "select")]
    Select(Vec<u32>),
    #[component(name = "replace")]
    Replace(BatchOut),
}

/// The `filter` export's result.
pub(crate) type FilterResult = Result<VerdictOut, BoundedString>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charges_bytes_until_the_budget_runs_out() {
        let ((a, b, c), overrun) = with_budget(Budget { events: 10, bytes: 10 }, || {
            (charge(0, 6), charge(0, 4), charge(0, 1))
        });
        assert!(a.is_ok() && b.is_ok());
        assert!(c.is_err());
        assert_eq!(overrun, Some(Overrun::Bytes));
    }

    #[test]
    fn refuses_a_list_longer_than_the_event_budget() {
        let (result, overrun) = with_budget(Budget { events: 3, bytes: 100 }, || charge(4, 0));
        assert!(result.is_err());
        assert_eq!(overrun, Some(Overrun::Events(4)));
    }

    #[test]
    fn a_call_outside_a_budget_is_not_charged_and_leaves_no_overrun() {
        assert!(charge(usize::MAX, usize::MAX).is_ok());
        let ((), overrun) = with_budget(Budget { events: 1, bytes: 1 }, || ());
        assert_eq!(overrun, None);
        assert!(charge(usize::MAX, 0).is_ok(), "the budget ends with the call");
    }

    #[test]
    fn reads_the_length_word_and_drops_the_encoding_tag() {
        assert_eq!(memory_len(&[0, 0, 0, 0, 5, 0, 0, 0]), 5);
        assert_eq!(string_units(0x8000_0007), 7);
    }
}
