"""Reconcilers: observe the cluster, ask a pure planner what to do, execute the plan."""
