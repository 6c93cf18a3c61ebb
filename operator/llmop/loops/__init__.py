"""The operator's long-running loops, as small objects: one backend's observer, one pull. Their
decisions are pure (pace.py) and tested without a cluster; the handlers only start them."""
