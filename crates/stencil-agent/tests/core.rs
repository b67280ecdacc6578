//! The worker core with a fake clock: transitions of TRANSPORT.md §6–§8 and a property test over random
//! event interleavings.

use std::sync::Arc;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use stencil_agent::core::{code, Notice, Pause};
use stencil_agent::{Checkpoint, Core, CoreConfig, Effect, Event, Failure, Payload, State, Timer};
use stencil_codec::datum::*;
use stencil_codec::{BatchEncoder, Compression, Generation};

fn encoder() -> BatchEncoder {
    BatchEncoder::new(Generation::V3, Compression::ZSTD)
}

/// Payload `seq`: a dictionary define and one log referencing it (and, for seq > 1, the previous one's
/// entry too, so that prefixes are needed after rotations).
fn payload(seq: u64) -> Payload {
    let id = seq + 1;
    let mut datums = vec![Datum::DictDefine(DictDefine {
        id,
        value: format!("v{seq}"),
    })];
    let tags = if seq > 1 {
        Some(Value::Dict(id - 1))
    } else {
        None
    };
    datums.push(Datum::Log(Log {
        timestamp: seq as i64,
        status: Some(Value::Dict(id)),
        service: None,
        tags,
        content: Content::Raw(format!("line {seq}")),
        json: None,
        uuid: None,
    }));
    let cp = vec![Checkpoint {
        source: Arc::from("src"),
        offset: seq * 10,
    }];
    Payload::build(seq, datums, cp, 6, &encoder()).expect("encodes")
}

struct Harness {
    core: Core,
    now: Instant,
}

impl Harness {
    fn new() -> Self {
        Harness {
            core: Core::new(CoreConfig::default(), encoder(), 7),
            now: Instant::now(),
        }
    }
    fn ev(&mut self, e: Event) -> Vec<Effect> {
        self.core.handle(e, self.now)
    }
    /// Moves the clock to `t`'s deadline and fires it.
    fn advance_to_timer(&mut self, t: Timer) -> Vec<Effect> {
        let at = self
            .core
            .deadline(t)
            .unwrap_or_else(|| panic!("{t:?} is armed"));
        self.now = self.now.max(at);
        self.ev(Event::Timer(t))
    }
    fn active(&mut self) -> u64 {
        let fx = self.ev(Event::Start);
        assert!(fx.contains(&Effect::Open(1)));
        let fx = self.ev(Event::Opened(1));
        assert!(
            matches!(
                fx[0],
                Effect::Send {
                    epoch: 1,
                    batch_id: 0,
                    ..
                }
            ),
            "{fx:?}"
        );
        assert_eq!(self.core.state(), State::Active);
        1
    }
}

fn sends(fx: &[Effect]) -> Vec<(u64, u32)> {
    fx.iter()
        .filter_map(|e| {
            if let Effect::Send {
                epoch, batch_id, ..
            } = e
            {
                Some((*epoch, *batch_id))
            } else {
                None
            }
        })
        .collect()
}

fn releases(fx: &[Effect]) -> Vec<u64> {
    fx.iter()
        .filter_map(|e| {
            if let Effect::Release { seq, .. } = e {
                Some(*seq)
            } else {
                None
            }
        })
        .collect()
}

#[test]
fn snapshot_then_data_and_acks_release_in_order() {
    let mut h = Harness::new();
    h.active();
    assert_eq!(sends(&h.ev(Event::Payload(payload(1)))), vec![(1, 1)]);
    assert_eq!(sends(&h.ev(Event::Payload(payload(2)))), vec![(1, 2)]);
    // The snapshot's ack is optional: an ack of 1 first is fine.
    assert_eq!(releases(&h.ev(Event::Ack(1, 1, 1))), vec![1]);
    assert_eq!(releases(&h.ev(Event::Ack(1, 2, 1))), vec![2]);
    assert_eq!(h.core.inflight().0, 0);
}

#[test]
fn nack_backs_off_and_replays_with_new_ids_and_a_prefix() {
    let mut h = Harness::new();
    h.active();
    h.ev(Event::Payload(payload(1)));
    h.ev(Event::Ack(1, 0, 1));
    h.ev(Event::Ack(1, 1, 1));
    h.ev(Event::Payload(payload(2)));
    let fx = h.ev(Event::Ack(1, 2, 0));
    assert!(fx.contains(&Effect::Cancel(1)), "{fx:?}");
    // The core logs nothing itself: the failure is a notice for the driver to log.
    assert!(
        fx.iter().any(|e| matches!(
            e,
            Effect::Notice(Notice::StreamFailed { code: Some(code::INVALID_ARGUMENT), message, state: "active" })
                if message.contains("NACK")
        )),
        "{fx:?}"
    );
    assert_eq!(h.core.state(), State::Backoff);
    assert_eq!(h.core.error_count(), 1);
    let fx = h.advance_to_timer(Timer::Backoff);
    assert!(fx.contains(&Effect::Open(2)));
    let fx = h.ev(Event::Opened(2));
    // Batch 0 carries the define payload 2 references (acked in payload 1); payload 2 replays as id 1.
    assert_eq!(sends(&fx), vec![(2, 0), (2, 1)]);
    assert_eq!(h.core.stats().replayed, 1);
    assert_eq!(releases(&h.ev(Event::Ack(2, 1, 1))), vec![2]);
}

#[test]
fn out_of_order_and_extra_acks_are_protocol_errors() {
    let mut h = Harness::new();
    h.active();
    h.ev(Event::Payload(payload(1)));
    let fx = h.ev(Event::Ack(1, 5, 1));
    assert!(fx.contains(&Effect::Cancel(1)));
    assert_eq!(h.core.state(), State::Backoff);
    assert!(releases(&fx).is_empty(), "nothing released on a bad ack");
}

#[test]
fn stale_events_are_ignored_and_late_streams_cancelled() {
    let mut h = Harness::new();
    h.active();
    h.ev(Event::Payload(payload(1)));
    h.ev(Event::Ack(1, 1, 0)); // NACK → backoff, epoch 1 dead
    assert!(
        h.ev(Event::Ack(1, 1, 1)).is_empty(),
        "a stale ack changes nothing"
    );
    assert_eq!(
        h.ev(Event::Opened(1)),
        vec![Effect::Cancel(1)],
        "a late stream is cancelled"
    );
}

#[test]
fn auth_failures_pause_and_a_key_reload_resumes() {
    let mut h = Harness::new();
    h.ev(Event::Start);
    h.ev(Event::OpenFailed(
        1,
        Failure {
            code: Some(code::UNAUTHENTICATED),
            message: "bad key".into(),
        },
    ));
    assert_eq!(h.core.state(), State::Paused(Pause::Auth));
    let (at, t) = h.core.next_deadline().expect("recheck armed");
    assert_eq!(t, Timer::Recheck);
    assert_eq!(at - h.now, Duration::from_secs(300));
    assert!(h.ev(Event::ApiKeyReloaded).contains(&Effect::Open(2)));
    h.ev(Event::OpenFailed(
        2,
        Failure {
            code: Some(code::UNIMPLEMENTED),
            message: "no".into(),
        },
    ));
    assert_eq!(h.core.state(), State::Paused(Pause::Protocol));
}

#[test]
fn lifetime_rotation_half_closes_or_drains() {
    let mut h = Harness::new();
    h.active();
    // Nothing unacked: half-close and open the next stream at once.
    let fx = h.advance_to_timer(Timer::Lifetime);
    assert!(
        fx.contains(&Effect::HalfClose(1)) && fx.contains(&Effect::Open(2)),
        "{fx:?}"
    );
    h.ev(Event::Opened(2));
    h.ev(Event::Payload(payload(1)));
    h.advance_to_timer(Timer::Lifetime);
    assert_eq!(h.core.state(), State::Draining);
    let fx = h.ev(Event::Ack(2, 1, 1));
    assert!(
        fx.contains(&Effect::HalfClose(2)) && fx.contains(&Effect::Open(3)),
        "drained: {fx:?}"
    );
    h.ev(Event::Opened(3));
    h.ev(Event::Payload(payload(2)));
    h.advance_to_timer(Timer::Lifetime);
    let fx = h.advance_to_timer(Timer::Drain);
    assert!(
        fx.contains(&Effect::Cancel(3)) && fx.contains(&Effect::Open(4)),
        "drain timeout: {fx:?}"
    );
    assert_eq!(h.core.error_count(), 0, "rotations are not errors");
}

#[test]
fn lifetimes_are_jittered() {
    let (mut first, mut later) = (Vec::new(), Vec::new());
    for seed in 0..200 {
        let mut core = Core::new(CoreConfig::default(), encoder(), seed);
        let now = Instant::now();
        core.handle(Event::Start, now);
        core.handle(Event::Opened(1), now);
        let at = core.deadline(Timer::Lifetime).expect("lifetime armed");
        first.push((at - now).as_secs_f64());
        core.handle(Event::Timer(Timer::Lifetime), at);
        core.handle(Event::Opened(2), at);
        let next = core.deadline(Timer::Lifetime).expect("lifetime armed");
        later.push((next - at).as_secs_f64());
    }
    let spread = |v: &[f64]| {
        v.iter().cloned().fold(f64::MIN, f64::max) - v.iter().cloned().fold(f64::MAX, f64::min)
    };
    assert!(
        first.iter().all(|s| (450.0..=990.0).contains(s)),
        "first stream: 900 s × U[0.5, 1.1]"
    );
    assert!(
        later.iter().all(|s| (810.0..=990.0).contains(s)),
        "later streams: 900 s ± 10 %"
    );
    assert!(
        spread(&first) > 300.0 && spread(&later) > 100.0,
        "jittered, not lockstep"
    );
}

#[test]
fn clean_end_after_an_ack_is_a_soft_rotation() {
    let mut h = Harness::new();
    h.active();
    h.ev(Event::Payload(payload(1)));
    h.ev(Event::Ack(1, 1, 1));
    let fx = h.ev(Event::Ended(1, Failure::ok()));
    assert!(fx.contains(&Effect::Open(2)), "no backoff: {fx:?}");
    assert_eq!(h.core.error_count(), 0);
    // A clean end with no ack on the epoch is a retryable failure.
    h.ev(Event::Opened(2));
    h.ev(Event::Ended(2, Failure::ok()));
    assert_eq!(h.core.state(), State::Backoff);
    assert_eq!(h.core.error_count(), 1);
}

#[test]
fn backoff_grows_and_is_jittered_at_the_cap() {
    let mut h = Harness::new();
    h.ev(Event::Start);
    let mut delays = Vec::new();
    for e in 1..=10 {
        h.ev(Event::OpenFailed(
            e,
            Failure {
                code: Some(14),
                message: "unavailable".into(),
            },
        ));
        let (at, t) = h.core.next_deadline().expect("backoff armed");
        assert_eq!(t, Timer::Backoff);
        delays.push((at - h.now).as_secs_f64());
        h.advance_to_timer(Timer::Backoff);
    }
    assert!((1.0..=2.0).contains(&delays[0]), "{delays:?}");
    assert!((2.0..=4.0).contains(&delays[1]), "{delays:?}");
    for d in &delays[6..] {
        assert!((60.0..=120.0).contains(d), "capped with jitter: {delays:?}");
    }
}

#[test]
fn stop_is_safe_in_every_state() {
    // Idle, Connecting, Backoff, Paused: stopped at once.
    let mut h = Harness::new();
    h.ev(Event::Stop);
    assert_eq!(h.core.state(), State::Stopped);
    let mut h = Harness::new();
    h.ev(Event::Start);
    assert!(h.ev(Event::Stop).contains(&Effect::Cancel(1)));
    assert_eq!(h.core.state(), State::Stopped);
    let mut h = Harness::new();
    h.ev(Event::Start);
    h.ev(Event::OpenFailed(
        1,
        Failure {
            code: None,
            message: "reset".into(),
        },
    ));
    h.ev(Event::Stop);
    assert_eq!(h.core.state(), State::Stopped);
    assert!(h.core.next_deadline().is_none(), "no timer left armed");
    // Active: shutting down, acks still processed, half-close once input is closed and all acked.
    let mut h = Harness::new();
    h.active();
    h.ev(Event::Payload(payload(1)));
    h.ev(Event::Stop);
    assert_eq!(h.core.state(), State::ShuttingDown);
    assert_eq!(
        releases(&h.ev(Event::Ack(1, 1, 1))),
        vec![1],
        "acks during shutdown are processed"
    );
    let fx = h.ev(Event::InputClosed);
    assert!(fx.contains(&Effect::HalfClose(1)));
    assert_eq!(h.core.state(), State::Closing);
    h.ev(Event::Ended(1, Failure::ok()));
    assert_eq!(h.core.state(), State::Stopped);
    // Draining, then the grace period runs out.
    let mut h = Harness::new();
    h.active();
    h.ev(Event::Payload(payload(1)));
    h.advance_to_timer(Timer::Lifetime);
    assert_eq!(h.core.state(), State::Draining);
    h.ev(Event::Stop);
    h.ev(Event::InputClosed);
    let fx = h.advance_to_timer(Timer::Grace);
    assert!(fx.contains(&Effect::HalfClose(1)));
    h.advance_to_timer(Timer::Close);
    assert_eq!(h.core.state(), State::Stopped);
    assert_eq!(
        h.core.inflight().0,
        1,
        "the unacked payload is kept (re-read after restart)"
    );
}

/// A payload of `n` raw logs.
fn payload_of(seq: u64, n: usize) -> Payload {
    let datums = (0..n)
        .map(|i| Datum::Log(Log::raw(i as i64, format!("p{seq} l{i}"))))
        .collect();
    let cp = vec![Checkpoint {
        source: Arc::from("src"),
        offset: seq * 100,
    }];
    Payload::build(seq, datums, cp, 0, &encoder()).expect("encodes")
}

/// Rejects the current stream `rounds` times, reopening after each backoff; returns every effect.
fn reject(h: &mut Harness, rounds: usize) -> Vec<Effect> {
    let mut all = Vec::new();
    for _ in 0..rounds {
        let epoch = h.core.epoch();
        all.extend(h.ev(Event::Ended(
            epoch,
            Failure {
                code: Some(code::INVALID_ARGUMENT),
                message: "bad batch".into(),
            },
        )));
        h.advance_to_timer(Timer::Backoff);
        all.extend(h.ev(Event::Opened(h.core.epoch())));
    }
    all
}

#[test]
fn poison_ladder_full_snapshot_raw_then_drop() {
    let mut h = Harness::new();
    h.active();
    h.ev(Event::Payload(payload(1)));
    let fx = reject(&mut h, 6);
    assert!(
        !fx.iter().any(|e| matches!(e, Effect::Dropped { .. })),
        "full snapshot, then raw: not dropped yet"
    );
    assert!(
        fx.iter()
            .any(|e| matches!(e, Effect::Notice(Notice::SentRaw { .. }))),
        "the raw step is told: {fx:?}"
    );
    assert_eq!(h.core.inflight().0, 1);
    let fx = reject(&mut h, 3);
    assert!(
        fx.iter().any(|e| matches!(
            e,
            Effect::Dropped {
                seq: 1,
                logs: 1,
                ..
            }
        )),
        "then dropped"
    );
    assert_eq!(h.core.stats().dropped_logs, 1);
    assert_eq!(h.core.inflight().0, 0);
}

#[test]
fn poison_ladder_splits_multi_log_payloads() {
    let mut h = Harness::new();
    h.active();
    h.ev(Event::Payload(payload_of(1, 4)));
    reject(&mut h, 3); // step 1: full snapshot
    assert_eq!(h.core.inflight().0, 1);
    let fx = reject(&mut h, 3); // step 2: split in two halves, both sent on the new stream
    assert_eq!(h.core.inflight().0, 2, "split in two: {fx:?}");
    let epoch = h.core.epoch();
    let fx = h.ev(Event::Ack(epoch, 1, 1));
    assert!(fx.iter().any(|e| matches!(e, Effect::Release { seq: 1, checkpoints, logs: 2 } if checkpoints.is_empty())), "{fx:?}");
    let fx = h.ev(Event::Ack(epoch, 2, 1));
    assert!(fx.iter().any(|e| matches!(e, Effect::Release { seq: 1, checkpoints, logs: 2 } if checkpoints.len() == 1)), "{fx:?}");
}

#[test]
fn an_oversized_snapshot_is_cut_and_the_rest_travels_as_prefixes() {
    let config = CoreConfig {
        max_batch_bytes: 200,
        ..CoreConfig::default()
    };
    let mut core = Core::new(config, encoder(), 1);
    let now = Instant::now();
    core.handle(Event::Start, now);
    core.handle(Event::Opened(1), now);
    // Payload 1 defines 20 big entries; payload 2 references them all.
    // Incompressible values, so that 20 of them cannot fit in 200 bytes.
    let noise = |id: u64| {
        (0..8)
            .map(|k| format!("{:016x}", (id * 31 + k).wrapping_mul(0x9E37_79B9_7F4A_7C15)))
            .collect::<String>()
    };
    let defines: Vec<Datum> = (2..22)
        .map(|id| {
            Datum::DictDefine(DictDefine {
                id,
                value: noise(id),
            })
        })
        .collect();
    let p1 = Payload::build(1, defines, vec![], 0, &encoder()).expect("encodes");
    core.handle(Event::Payload(p1), now);
    core.handle(Event::Ack(1, 1, 1), now);
    let logs: Vec<Datum> = (2..22)
        .map(|id| {
            Datum::Log(Log {
                timestamp: 0,
                status: Some(Value::Dict(id)),
                service: None,
                tags: None,
                content: Content::Raw("x".into()),
                json: None,
                uuid: None,
            })
        })
        .collect();
    let p2 = Payload::build(2, logs, vec![], 0, &encoder()).expect("encodes");
    let canonical = p2.size;
    core.handle(Event::Payload(p2), now);
    // Reconnect: batch 0 must stay under 200 bytes; payload 2 then carries the missing defines.
    core.handle(
        Event::Ended(
            1,
            Failure {
                code: Some(14),
                message: String::new(),
            },
        ),
        now,
    );
    let at = core.deadline(Timer::Backoff).expect("backoff");
    core.handle(Event::Timer(Timer::Backoff), at);
    let fx = core.handle(Event::Opened(2), at);
    let sizes: Vec<(u32, usize)> = fx
        .iter()
        .filter_map(|e| {
            if let Effect::Send { batch_id, data, .. } = e {
                Some((*batch_id, data.len()))
            } else {
                None
            }
        })
        .collect();
    assert_eq!(sizes.len(), 2);
    assert!(sizes[0].1 <= 200, "batch 0 fits: {sizes:?}");
    assert!(
        sizes[1].1 > canonical + 1000,
        "payload 2 carries the defines batch 0 could not: {sizes:?} vs {canonical}"
    );
    assert_eq!(
        core.stats().dangling,
        0,
        "every reference resolves through the prefix"
    );
}

#[test]
fn a_dangling_reference_is_counted_and_the_log_sent_raw() {
    // A malformed payload: the log comes before the defines it references.
    let datums = vec![
        Datum::Log(Log {
            timestamp: 5,
            status: Some(Value::Dict(5)),
            service: None,
            tags: None,
            content: Content::Pattern {
                id: 9,
                values: vec![Value::Int(42).into()],
            },
            json: None,
            uuid: None,
        }),
        Datum::DictDefine(DictDefine {
            id: 5,
            value: "info".into(),
        }),
        Datum::PatternDefine(PatternDefine {
            id: 9,
            template: "answer=".into(),
            pos_list: vec![7],
        }),
    ];
    let p = Payload::build(1, datums, vec![], 0, &encoder()).expect("encodes");
    let mut h = Harness::new();
    h.active();
    let fx = h.ev(Event::Payload(p));
    assert!(h.core.stats().dangling > 0);
    let data = fx
        .iter()
        .find_map(|e| {
            if let Effect::Send {
                batch_id: 1, data, ..
            } = e
            {
                Some(data.clone())
            } else {
                None
            }
        })
        .expect("sent");
    let mut dec = stencil_codec::StreamDecoder::new(
        Generation::V3,
        Compression::ZSTD,
        stencil_codec::Limits::default(),
    );
    dec.decode(0, &[]).expect("snapshot");
    let batch = dec
        .decode(1, &data)
        .expect("the intake accepts it: no unresolved reference");
    assert_eq!(batch.logs[0].message, "answer=42");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Random interleavings: no panic; releases are in production order and at most once; each epoch's
    /// batch ids run 0, 1, 2, …; nothing is released without an OK ack in the same step.
    #[test]
    fn invariants_hold_under_random_events(ops in prop::collection::vec((0u8..12, 0u8..4), 1..200)) {
        let mut core = Core::new(CoreConfig::default(), encoder(), 3);
        let mut now = Instant::now();
        let mut next_seq = 1;
        let mut released = Vec::new();
        let mut last_id: std::collections::HashMap<u64, u32> = Default::default();
        let mut sent_ids: Vec<(u64, u32)> = Vec::new();
        let mut fx = core.handle(Event::Start, now);
        for (op, arg) in ops {
            let epoch = core.epoch();
            let event = match op {
                0 | 1 if core.wants_input() => { next_seq += 1; Event::Payload(payload(next_seq - 1)) }
                2 => Event::Opened(epoch),
                3 => Event::Opened(epoch.saturating_sub(u64::from(arg))),
                4 | 5 => {
                    // Ack the oldest unacked id of this epoch, sometimes a wrong one or a NACK.
                    let id = sent_ids.iter().find(|(e, _)| *e == epoch).map(|(_, i)| *i).unwrap_or(0);
                    let id = if arg == 3 { id + 1 } else { id };
                    Event::Ack(epoch, id, if arg == 2 { 0 } else { 1 })
                }
                6 => Event::Ended(epoch, if arg == 0 { Failure::ok() } else { Failure { code: Some(14), message: String::new() } }),
                7 => Event::OpenFailed(epoch, Failure { code: Some(if arg == 1 { code::UNAUTHENTICATED } else { 14 }), message: String::new() }),
                8 => match core.next_deadline() { Some((at, t)) => { now = at; Event::Timer(t) } None => Event::Start },
                9 => Event::ApiKeyReloaded,
                10 if arg == 0 => Event::Stop,
                _ => Event::InputClosed,
            };
            let was_ack = matches!(event, Event::Ack(_, _, 1));
            fx = core.handle(event, now);
            for e in &fx {
                match e {
                    Effect::Send { epoch, batch_id, .. } => {
                        let expect = last_id.get(epoch).map_or(0, |l| l + 1);
                        prop_assert_eq!(*batch_id, expect, "ids consecutive from 0 on epoch {}", epoch);
                        last_id.insert(*epoch, *batch_id);
                        if *batch_id > 0 { sent_ids.push((*epoch, *batch_id)); }
                    }
                    Effect::Release { seq, .. } => {
                        prop_assert!(was_ack, "a release only follows an OK ack");
                        released.push(*seq);
                        sent_ids.retain(|(e, _)| *e == core.epoch());
                        if !sent_ids.is_empty() { sent_ids.remove(0); }
                    }
                    Effect::Dropped { seq, .. } => released.push(*seq),
                    _ => {}
                }
            }
            if core.state() == State::Stopped { break; }
        }
        let _ = fx;
        for w in released.windows(2) {
            prop_assert!(w[0] < w[1], "released in order, at most once: {:?}", released);
        }
        let (tracked, _) = core.inflight();
        prop_assert_eq!(released.len() + tracked, (next_seq - 1) as usize, "nothing lost");
    }
}

/// v3 keeps deletes off the wire, so the intake holds every define a stream carried until it ends: a
/// stream that has carried `max_stream_entries` defines is rotated (after its acks), and the next one
/// starts with only what the unacked payloads need. (Unique templates used to fill the intake's
/// 100,000-pattern limit in seconds, and each rejection replayed a batch.)
#[test]
fn a_stream_whose_intake_state_is_full_is_rotated() {
    let mut h = Harness {
        core: Core::new(
            CoreConfig {
                max_stream_entries: 3,
                ..CoreConfig::default()
            },
            encoder(),
            7,
        ),
        now: Instant::now(),
    };
    h.active();
    // Each payload defines one dictionary entry: three fit on the stream.
    for seq in 1..=3 {
        assert_eq!(
            sends(&h.ev(Event::Payload(payload(seq)))),
            vec![(1, seq as u32)]
        );
    }
    // The fourth waits: the stream drains its acks and is replaced.
    let fx = h.ev(Event::Payload(payload(4)));
    assert!(sends(&fx).is_empty(), "{fx:?}");
    assert_eq!(h.core.state(), State::Draining);
    h.ev(Event::Ack(1, 1, 1));
    h.ev(Event::Ack(1, 2, 1));
    let fx = h.ev(Event::Ack(1, 3, 1));
    assert!(
        fx.contains(&Effect::HalfClose(1)) && fx.contains(&Effect::Open(2)),
        "{fx:?}"
    );
    let fx = h.ev(Event::Opened(2));
    // Batch 0 of the new stream, then the waiting payload.
    assert_eq!(sends(&fx), vec![(2, 0), (2, 1)], "{fx:?}");
    assert_eq!(h.core.stats().state_rotations, 1);
    assert_eq!(h.core.error_count(), 0, "a rotation, not an error");
}

/// On a stream with the extensions, the engine's pattern deletes travel at the end of the payload's
/// batch, so our intake frees the pattern (and its native columns); plain v3 keeps them off the wire.
#[test]
fn pattern_deletes_travel_on_an_extension_stream_and_free_the_intake() {
    use stencil_codec::Extensions;
    let config = CoreConfig {
        extensions: Extensions::ALL,
        ..CoreConfig::default()
    };
    let mut core = Core::new(config, encoder(), 9);
    let now = Instant::now();
    core.handle(Event::Start, now);
    let mut sent = Vec::new();
    let mut collect = |fx: Vec<Effect>| {
        for e in fx {
            if let Effect::Send { batch_id, data, .. } = e {
                sent.push((batch_id, data));
            }
        }
    };
    collect(core.handle(Event::Opened(1), now));
    collect(core.handle(Event::Echo(1, Extensions::ALL), now));
    let log = |id: u64, v: i64| {
        Datum::Log(Log {
            timestamp: v,
            status: None,
            service: None,
            tags: None,
            content: Content::Pattern {
                id,
                values: vec![Value::Int(v).into()],
            },
            json: None,
            uuid: None,
        })
    };
    let define = Datum::PatternDefine(PatternDefine {
        id: 9,
        template: "answer=".into(),
        pos_list: vec![7],
    });
    // Enough logs of the pattern that the structured form wins the stream's first batch.
    let mut datums = vec![define];
    datums.extend((0..300).map(|v| log(9, 1000 + 7 * v)));
    let p1 = Payload::build_lazy(1, datums, vec![], 300 * 11);
    collect(core.handle(Event::Payload(p1), now));
    // The engine evicted pattern 9; the next payload carries the delete and a raw log.
    let raw = Datum::Log(Log {
        timestamp: 2,
        status: None,
        service: None,
        tags: None,
        content: Content::Raw("later".into()),
        json: None,
        uuid: None,
    });
    let p2 = Payload::build_lazy(2, vec![Datum::PatternDelete { id: 9 }, raw], vec![], 5);
    assert!(!p2
        .wire
        .iter()
        .any(|d| matches!(d, Datum::PatternDelete { .. })));
    collect(core.handle(Event::Payload(p2), now));
    assert_eq!(
        sent.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
        vec![0, 1, 2]
    );
    let mut dec = stencil_codec::StreamDecoder::new(
        Generation::V3,
        Compression::ZSTD,
        stencil_codec::Limits::default(),
    )
    .with_extensions(Extensions::ALL, 20)
    .keep_datums(true);
    for (id, data) in &sent[..2] {
        dec.decode(*id, data).expect("decodes");
    }
    assert_eq!(dec.state().entries().1, 1, "the intake holds pattern 9");
    let last = dec.decode(2, &sent[2].1).expect("decodes");
    assert!(
        last.datums
            .iter()
            .any(|d| matches!(d, Datum::PatternDelete { id: 9 })),
        "{:?}",
        last.datums
    );
    assert_eq!(last.logs[0].message, "later");
    assert_eq!(dec.state().entries().1, 0, "and frees it");
}

/// On an extension stream the intake drops the patterns whose deletes it receives, so they stop counting
/// towards the stream's state: a stream whose engine evicts as fast as it learns is not rotated, while one
/// whose defines pile up still is. (Before, an extension stream counted every define it ever carried: on
/// unique-heavy logs it rotated every ten thousand logs, restarting its zstd contexts, columns and form
/// trial each time, at twice the CPU and 3.5 % more bytes in `bench cardinality`.)
#[test]
fn an_extension_stream_does_not_count_deleted_patterns_towards_rotation() {
    use stencil_codec::Extensions;
    let run = |deletes: bool| {
        let config = CoreConfig {
            extensions: Extensions::ALL,
            max_stream_entries: 3,
            ..CoreConfig::default()
        };
        let mut core = Core::new(config, encoder(), 9);
        let now = Instant::now();
        core.handle(Event::Start, now);
        core.handle(Event::Opened(1), now);
        core.handle(Event::Echo(1, Extensions::ALL), now);
        let mut sent = Vec::new();
        for seq in 1..=10u64 {
            let mut datums = Vec::new();
            if deletes && seq > 1 {
                datums.push(Datum::PatternDelete { id: seq - 1 });
            }
            datums.push(Datum::PatternDefine(PatternDefine {
                id: seq,
                template: format!("job {seq} took  ms"),
                pos_list: vec![format!("job {seq} took ").len() as u32],
            }));
            datums.push(Datum::Log(Log {
                timestamp: seq as i64,
                status: None,
                service: None,
                tags: None,
                content: Content::Pattern {
                    id: seq,
                    values: vec![Value::Int(seq as i64).into()],
                },
                json: None,
                uuid: None,
            }));
            let p = Payload::build_lazy(seq, datums, vec![], 20);
            sent.extend(sends(&core.handle(Event::Payload(p), now)));
        }
        (core.stats().state_rotations, sent)
    };
    let (rotations, sent) = run(true);
    assert_eq!(rotations, 0, "{sent:?}");
    assert_eq!(
        sent.len(),
        10,
        "every payload went on the first stream: {sent:?}"
    );
    assert!(sent.iter().all(|(epoch, _)| *epoch == 1), "{sent:?}");
    let (rotations, sent) = run(false);
    assert_eq!(
        rotations, 1,
        "live defines still rotate the stream: {sent:?}"
    );
}

/// JSON logs whose schema places the message (`json-order`), on a stream whose intake did not agree
/// to it (a Datadog intake acks batch 0 without an echo): both payloads are in flight before any ack,
/// the second one's logs reference the schema the first one defined, and no batch carries the schema:
/// every log arrives as its record's text, no reference dangles. With the echo, the same payloads go
/// as documents in the record's member order.
#[test]
fn placed_json_logs_go_as_text_to_an_intake_without_json_order() {
    use stencil_codec::Extensions;
    let json_log = |t: i64, user: &str| {
        Datum::Log(Log {
            timestamp: t,
            status: None,
            service: None,
            tags: None,
            content: Content::Pattern {
                id: 1,
                values: vec![Value::Str(user.into()).into()],
            },
            json: Some(JsonContext::Columns {
                schema: 2,
                values: vec![JsonValue::Int(30), JsonValue::Int(t)],
            }),
            uuid: None,
        })
    };
    let first = |t| {
        let mut datums: Vec<Datum> = [(2, "level"), (3, "msg"), (4, "pid")]
            .iter()
            .map(|&(id, value)| {
                Datum::DictDefine(DictDefine {
                    id,
                    value: value.into(),
                })
            })
            .collect();
        datums.push(Datum::PatternDefine(PatternDefine {
            id: 1,
            template: "user  in".into(),
            pos_list: vec![5],
        }));
        datums.push(Datum::SchemaDefine(SchemaDefine {
            id: 2,
            keys: vec![2, 4],
            message_key: 3,
            kinds: vec![JsonKind::Int, JsonKind::Int],
            message_at: Some(1),
        }));
        datums.push(json_log(t, "ann"));
        Payload::build_lazy(1, datums, vec![], 40)
    };
    let want = |t: i64, user: &str| format!(r#"{{"level":30,"msg":"user {user} in","pid":{t}}}"#);
    for echo in [false, true] {
        let config = CoreConfig {
            extensions: Extensions::ALL,
            ..CoreConfig::default()
        };
        let mut core = Core::new(config, encoder(), 9);
        let now = Instant::now();
        let mut fx = core.handle(Event::Start, now);
        fx.extend(core.handle(Event::Opened(1), now));
        if echo {
            fx.extend(core.handle(Event::Echo(1, Extensions::ALL), now));
        } else {
            fx.extend(core.handle(Event::Ack(1, 0, 1), now));
        }
        fx.extend(core.handle(Event::Payload(first(7)), now));
        let second = Payload::build_lazy(2, vec![json_log(8, "bo")], vec![], 40);
        fx.extend(core.handle(Event::Payload(second), now));
        assert!(
            !fx.iter()
                .any(|e| matches!(e, Effect::Notice(Notice::Dangling(_)))),
            "{fx:?}"
        );
        let sent: Vec<(u32, bytes::Bytes)> = fx
            .into_iter()
            .filter_map(|e| match e {
                Effect::Send { batch_id, data, .. } => Some((batch_id, data)),
                _ => None,
            })
            .collect();
        assert_eq!(sent.iter().map(|s| s.0).collect::<Vec<_>>(), [0, 1, 2]);
        let mut dec = stencil_codec::StreamDecoder::new(
            Generation::V3,
            Compression::ZSTD,
            stencil_codec::Limits::default(),
        )
        .keep_datums(true);
        if echo {
            dec = dec.with_extensions(Extensions::ALL, 20);
        }
        let (mut records, mut schemas) = (Vec::new(), 0);
        for (id, data) in &sent {
            let batch = dec.decode(*id, data).expect("decodes");
            schemas += batch
                .datums
                .iter()
                .filter(|d| matches!(d, Datum::SchemaDefine(_)))
                .count();
            records.extend(batch.logs);
        }
        assert_eq!(
            schemas,
            usize::from(echo),
            "the schema goes only where agreed"
        );
        let texts: Vec<String> = records
            .iter()
            .map(|r| {
                String::from_utf8(stencil_codec::original_bytes(r).expect("bytes")).expect("UTF-8")
            })
            .collect();
        assert_eq!(texts, [want(7, "ann"), want(8, "bo")], "echo {echo}");
        assert_eq!(core.stats().json_as_text, if echo { 0 } else { 2 });
        assert_eq!(records.iter().all(|r| r.json.is_some()), echo);
    }
}
