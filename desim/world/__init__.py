"""The world a run replays.

- signals: piecewise-constant signals and their exact integration (``piecewise``), the Shannon
  rate and the planner's rate models (``rates``, with their numeric kernels in
  ``rate_kernels``);
- the uplink: channels (``channel``) from TR 38.901 path loss (``pathloss``), fast fading
  (``fading``) and moving devices (``mobility``), or from replayed traces (``channel_trace``);
- device compute timelines (``compute``);
- traces: the validated trace (``traces``), tidy tables (``tidy``), replay for scenario devices
  (``replay``) and the importers of foreign formats (``importers``, ``trace_import``);
- the channel and compute kinds a scenario names (``channel_kinds``, ``compute_kinds``), checked
  where scenarios are loaded (``kinds``).
"""
