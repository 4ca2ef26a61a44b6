"""Speed measurement: workloads, the timer, sweeps, profiler traces, analytic cost."""
