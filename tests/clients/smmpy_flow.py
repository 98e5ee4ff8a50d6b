"""Drives a panel through `smmpy`, a client from PyPI that nobody here wrote.

Usage: python smmpy_flow.py API_URL KEY [SERVICE]
SERVICE (default 101, the simulator's Instagram Followers) must be a refillable, cancellable
Default service with a minimum above 1.
Lists services, places an order, polls it to completion, refills it, checks the refill, places
a second order and cancels it, and checks the balance moved by exactly the charges. Prints
"smmpy flow ok" on success; any failed check raises.
"""
import sys
import time
from decimal import Decimal

from smmpy import smm

url, key = sys.argv[1], sys.argv[2]
service = int(sys.argv[3]) if len(sys.argv) > 3 else 101
api = smm(url, key)


def wait(order_id, statuses, limit=30.0):
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        s = api.get_status(order_id)
        if s["status"] in statuses:
            return s
        time.sleep(0.05)
    raise AssertionError(f"order {order_id} did not reach {statuses}: {s}")


services = api.get_services()
by_id = {s["service"]: s for s in services}
followers = by_id[service]
assert followers["type"] == "Default" and followers["refill"] is True, followers
rate = Decimal(followers["rate"])

start = Decimal(api.get_balance()["balance"])

order = api.add_order(service, "https://instagram.com/someone?sim-fate=complete", 1000)["order"]
assert isinstance(order, int), order
done = wait(order, {"Completed"})
assert done["remains"] == "0", done
assert Decimal(done["charge"]) == rate, done

refill = api.create_refill(order)["refill"]
assert isinstance(refill, str) and refill.isdigit(), refill
rs = api.get_refill_status(refill)
assert rs["status"] in {"Pending", "In progress", "Completed", "Rejected"}, rs
multi_rs = api.get_multi_refill_status([refill])
assert multi_rs[0]["refill"] == int(refill), multi_rs

second = api.add_order(service, "https://instagram.com/other?sim-fate=hold", 1000)["order"]
wait(second, {"In progress"})
multi = api.get_multi_status([order, second])
assert set(multi) == {str(order), str(second)}, multi
canceled = api.cancel_orders([second])
assert canceled == [{"order": second, "cancel": 1}], canceled
half = wait(second, {"Partial"})
assert half["remains"] == "500", half

try:
    api.add_order(service, "https://instagram.com/x", 1)
    raise AssertionError("an order below the minimum was accepted")
except Exception as e:  # smmpy raises a bare Exception carrying the panel's text
    assert str(e) == f"Quantity less than minimal {followers['min']}", e

end = Decimal(api.get_balance()["balance"])
assert start - end == Decimal(done["charge"]) + Decimal(half["charge"]), (start, end, done, half)
print("smmpy flow ok")
