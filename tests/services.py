"""Service classes the Runner tests serve. A service's class travels by reference, so its
module is imported in the pod: this one imports only what a pod has (the public ``podrun``
API, resolved by the pod package), never the client's modules or the tests' fixtures."""

from __future__ import annotations

import time

import podrun


class Counter:
    def __init__(self, start=0):
        self.count = start

    def add(self, n=1):
        self.count += n
        return self.count

    def value(self):
        return self.count

    def _private(self):
        return "hidden"


class Marked:
    @podrun.method
    def visible(self):
        return "yes"

    def not_exposed(self):
        return "no"


class Slow:
    def nap(self, seconds):
        time.sleep(seconds)
        return seconds


class Tally:
    def __init__(self):
        self.total = 0

    def add(self, n):
        self.total += n
        return self.total


class Model:
    def predict(self, x: int) -> int:
        return x + 1
