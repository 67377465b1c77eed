"""Built-in plugin ``openvla``: OpenVLA and OpenVLA-OFT, checkpoint-compatible with the published
weights (see ``docs/openvla.md``). :mod:`pcm_openvla.policy` holds the two backends,
:mod:`pcm_openvla.modeling` and :mod:`pcm_openvla.vit` the network under the published names.
"""
