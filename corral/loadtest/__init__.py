"""`corral loadtest`: the load generator (callback-driven connections, closed and open loop, ramp
search) and its report (table, JSON, chart). Pure parts: stats, schedule, ramp, frames, flags,
requests; I/O: conn, driver, run, live, plot."""
