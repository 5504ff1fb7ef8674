"""A job: a pod run that executes a batch of calls, one step per module.

``key`` (what calls share a job), ``pack`` (the bundle), ``submit`` (uplink and ``run_pod``,
at most once), ``follow`` (waiting on the pod, reading its records), ``resolve`` (records to
futures) and ``job`` (the Job that ties them). Nothing is re-exported here: importing one
step never imports the others.
"""
