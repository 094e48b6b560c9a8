"""A two-node Ray cluster on one machine (a head with the dashboard, and one worker node), until SIGTERM.

Used by two_node_submit.sh. Usage: python local_cluster.py ADDRESS_FILE DASHBOARD_PORT
"""

import signal
import sys
import time

from ray.cluster_utils import Cluster

address_file, dashboard_port = sys.argv[1], int(sys.argv[2])
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # run the finally below: stop only this cluster's processes
cluster = Cluster(
    initialize_head=True,
    head_node_args={"num_cpus": 1, "include_dashboard": True, "dashboard_port": dashboard_port, "dashboard_host": "127.0.0.1"},
)
cluster.add_node(num_cpus=1)
cluster.wait_for_nodes()
with open(address_file, "w") as f:
    f.write(cluster.address)
print("cluster up", cluster.address, flush=True)
try:
    while True:
        time.sleep(1)
finally:
    cluster.shutdown()
    print("cluster down", flush=True)
