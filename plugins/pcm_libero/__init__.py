"""LIBERO environment backend (env ``libero``): the five standard suites on MuJoCo, with the
observation, action, initial-state and episode-limit conventions of the published OpenVLA and
OpenVLA-OFT LIBERO evaluations (docs/libero.md). Needs ``pip install "pcm-vla[libero]"``."""
