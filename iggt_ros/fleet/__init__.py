"""Fleet evaluation: replay many recorded bags, one after another or as tasks on a Ray cluster, into one report.

Ray is an optional extra (`pip install iggt_ros[ray]`): only `iggt_ros.fleet.runners.RayRunner`
imports it, when it is asked for; the core package and the node never do.
"""
