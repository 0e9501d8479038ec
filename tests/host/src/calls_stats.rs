//! Hostcalls for logging, time, the tick timer and metrics, with Envoy's answers: a counter
//! increment of 0 or less is `BadArgument`, a histogram cannot be incremented or read.

use wasmtime::{Caller, Linker};

use super::abi::{self, LogLevel, Outcome, Status, finish};
use super::state::{HostState, MetricKind, Metrics};

type C<'a> = Caller<'a, HostState>;

fn log(mut c: C<'_>, level: u32, ptr: u32, len: u32) -> Outcome {
    let level = LogLevel::from_abi(level).ok_or(Status::BadArgument)?;
    let message = abi::read_string(&c, ptr, len)?;
    c.data_mut().log(level, message);
    Ok(())
}

fn get_log_level(mut c: C<'_>, ret: u32) -> Outcome {
    let level = c.data().log_level;
    abi::write_u32(&mut c, ret, level)?;
    Ok(())
}

fn current_time(mut c: C<'_>, ret: u32) -> Outcome {
    let now = c.data().clock.now_ns();
    abi::write_u64(&mut c, ret, now)?;
    Ok(())
}

/// The tick timer belongs to the root context; like Envoy's timer, setting a period re-arms it,
/// so the next tick is one period from now.
fn set_tick_period(mut c: C<'_>, period_ms: u32) -> Outcome {
    let state = c.data_mut();
    state.tick_period_ms = period_ms;
    state.tick_base_ns = state.clock.now_ns();
    Ok(())
}

fn define_metric(mut c: C<'_>, kind: u32, ptr: u32, len: u32, ret: u32) -> Outcome {
    let kind = match kind {
        0 => MetricKind::Counter,
        1 => MetricKind::Gauge,
        2 => MetricKind::Histogram,
        _ => return Err(Status::BadArgument.into()),
    };
    let name = abi::read_string(&c, ptr, len)?;
    let id = c.data_mut().metrics.define(kind, &name);
    abi::write_u32(&mut c, ret, id)?;
    Ok(())
}

fn increment_metric(mut c: C<'_>, id: u32, offset: i64) -> Outcome {
    let kind = Metrics::kind_of(id).ok_or(Status::BadArgument)?;
    let metric = c.data_mut().metrics.get_mut(id).ok_or(Status::NotFound)?;
    match kind {
        MetricKind::Counter if offset > 0 => metric.value += offset,
        MetricKind::Gauge => metric.value += offset,
        _ => return Err(Status::BadArgument.into()),
    }
    Ok(())
}

fn record_metric(mut c: C<'_>, id: u32, value: u64) -> Outcome {
    let kind = Metrics::kind_of(id).ok_or(Status::NotFound)?;
    let metric = c.data_mut().metrics.get_mut(id).ok_or(Status::NotFound)?;
    match kind {
        MetricKind::Counter => metric.value += value as i64,
        MetricKind::Gauge => metric.value = value as i64,
        MetricKind::Histogram => metric.samples.push(value),
    }
    Ok(())
}

fn get_metric(mut c: C<'_>, id: u32, ret: u32) -> Outcome {
    let kind = Metrics::kind_of(id).ok_or(Status::BadArgument)?;
    if kind == MetricKind::Histogram {
        return Err(Status::BadArgument.into());
    }
    let value = c
        .data_mut()
        .metrics
        .get_mut(id)
        .ok_or(Status::NotFound)?
        .value;
    abi::write_u64(&mut c, ret, value as u64)?;
    Ok(())
}

/// Adds the logging, time, tick and metric hostcalls to `linker`.
pub(crate) fn register(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.func_wrap("env", "proxy_log", |c: C<'_>, l: u32, p: u32, n: u32| {
        finish(log(c, l, p, n))
    })?;
    linker.func_wrap("env", "proxy_get_log_level", |c: C<'_>, r: u32| {
        finish(get_log_level(c, r))
    })?;
    linker.func_wrap(
        "env",
        "proxy_get_current_time_nanoseconds",
        |c: C<'_>, r: u32| finish(current_time(c, r)),
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_tick_period_milliseconds",
        |c: C<'_>, p: u32| finish(set_tick_period(c, p)),
    )?;
    linker.func_wrap(
        "env",
        "proxy_define_metric",
        |c: C<'_>, k: u32, p: u32, l: u32, r: u32| finish(define_metric(c, k, p, l, r)),
    )?;
    linker.func_wrap(
        "env",
        "proxy_increment_metric",
        |c: C<'_>, id: u32, o: i64| finish(increment_metric(c, id, o)),
    )?;
    linker.func_wrap("env", "proxy_record_metric", |c: C<'_>, id: u32, v: u64| {
        finish(record_metric(c, id, v))
    })?;
    linker.func_wrap("env", "proxy_get_metric", |c: C<'_>, id: u32, r: u32| {
        finish(get_metric(c, id, r))
    })?;
    Ok(())
}

/// The names this module provides, for the import check.
pub(crate) const PROVIDES: &[&str] = &[
    "proxy_log",
    "proxy_get_log_level",
    "proxy_get_current_time_nanoseconds",
    "proxy_set_tick_period_milliseconds",
    "proxy_define_metric",
    "proxy_increment_metric",
    "proxy_record_metric",
    "proxy_get_metric",
];
