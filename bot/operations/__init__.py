"""Drains and drills: their states (state.py), what they keep (detail.py), their storage
(store.py), what people do to them (workflow.py), and the lease holder's drivers: the drain's
(drain.py) and the drill's (calendar.py, preflight.py, run.py)."""
