"""`emo-edge bench`: latency of every stage on every backend, a token-budget sweep, the roofline of this
machine and a projection onto Jetson boards. Statistics (`stats`), FLOP counting (`flops`) and the roofline
arithmetic (`roofline`) are pure and unit-tested; `runner` times, `analysis` interprets, `report` writes."""
