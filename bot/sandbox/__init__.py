"""The outside world on loopback: real servers that speak the real protocols, for demo and tests."""
