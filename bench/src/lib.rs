//! The side-by-side benchmark of hopguard and Postfix (see bench/README.md).
//!
//! - [`load`]: the load generator (`hopguard-load`): STARTTLS sessions, pipelined
//!   MAIL/RCPT/DATA, an id and a send timestamp in a header of each message.
//! - [`sink`]: the sink MTA (`hopguard-sink`): STARTTLS, discards each message and appends
//!   `SEQ ARRIVAL_NS` to `RECORD_DIR/RUN.arrivals`.
//! - [`orchestrate`]: the whole benchmark (`hopguard-bench`, run by `bench/run.sh`).
//!
//! Everything talks over 127.0.0.0/8 only. Timestamps are `CLOCK_REALTIME` nanoseconds: the
//! load generator and the sink run on one machine, so their clocks agree.

pub mod ca;
pub mod load;
pub mod orchestrate;
pub mod procmon;
pub mod sink;
pub mod smtp;
pub mod stats;
pub mod tls;

/// Nanoseconds since the Unix epoch (wall clock, shared by every process on the machine).
pub fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}
