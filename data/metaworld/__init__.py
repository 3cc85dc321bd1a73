"""The simulated MetaWorld corpus: the simulator (:mod:`~data.metaworld.sim`), how each episode is acted
(:mod:`~data.metaworld.behaviours`) and the LeRobot dataset written from it
(:mod:`~data.metaworld.corpus`)."""
