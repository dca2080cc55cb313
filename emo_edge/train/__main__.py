from emo_edge.train.loop import main

main()
