"""Tools for running jobs on one machine, shared by the demo, the rehearsal of the cluster scripts, the tests and
the benchmarks: a tiny model built locally (:mod:`.tiny`), a private Ray head on loopback (:mod:`.ray_head`) and the
rehearsal of a cluster user's submission (:mod:`.rehearsal`)."""
