"""Data: the unified instruction format, the SynthEmo generator and clip loading."""

# SynthEmo versions (kept here, free of the generator's imports, so the CLI's option reads them cheaply):
# 1: emo_edge.data.synth (cues follow the label), 2: emo_edge.data.synth_v2 (label-independent attributes,
# the temporal pair). DEFAULT: what `emo-edge data synth` and `synth.generate` write unless told.
SYNTH_VERSIONS: tuple[int, ...] = (1, 2)
SYNTH_DEFAULT_VERSION = 2
