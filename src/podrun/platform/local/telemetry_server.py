"""CG2's onboard telemetry service, synthesised: ``python3 -E -s telemetry_server.py [PORT [ADDRESS]]``.

Why: pods on CG2 call ``http://satellite-telemetry.dphi-tm`` (DPhi's echo-test and fisheye
examples do); a local pod must find the same endpoints with the same shapes (DPhi's OpenAPI
of the service) and plausible values. The orbit is real mechanics, not noise: a sun-synchronous
500 km orbit whose TLE is made and propagated with ``sgp4`` (the standard SGP4 implementation);
attitude, power and temperatures follow the orbit (eclipse, sun angle). Fisheye images are
generated PNGs (a disc of sky, Earth's limb, the sun), named by day as onboard.

Runs inside a container of the user's pod network (see ``telemetry.py``), with nothing but the
standard library and ``sgp4`` (mounted beside this file): no podrun import.
"""

from __future__ import annotations

import io
import json
import math
import struct
import sys
import uuid
import zipfile
import zlib
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from sgp4 import exporter
from sgp4.api import WGS72, Satrec, jday

TYPES = ("position", "velocity", "attitude", "power", "temperature")
CADENCE_S = 60  # one record of each type a minute, the last 24 hours
HISTORY_S = 24 * 3600
MAX_RECORDS = 5000  # an unbounded query onboard could take the service down; here it is capped
MAX_BODY = 64 * 1024
IMAGE_DAYS = 12
IMAGE_SIDE = 96
MINUTES_PER_DAY = 1440.0


def _epoch() -> datetime:
    today = datetime.now(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
    return today - timedelta(days=1)


def make_satellite(epoch: datetime) -> Satrec:
    """A 500 km sun-synchronous orbit (inclination 97.4°, ~15.2 revolutions a day) at ``epoch``."""
    sat = Satrec()
    start = datetime(1949, 12, 31, tzinfo=timezone.utc)
    days = (epoch - start).total_seconds() / 86400.0
    mean_motion = 15.22 * 2 * math.pi / MINUTES_PER_DAY  # radians per minute
    sat.sgp4init(WGS72, "i", 60507, days, 2.1e-5, 0.0, 0.0, 0.0012, math.radians(91.0),
                 math.radians(97.4), math.radians(15.0), mean_motion, math.radians(210.0))
    return sat


def _iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class Telemetry:
    """Records derived from the orbit at any instant (deterministic: the same instant gives the
    same record, so repeated queries agree)."""

    def __init__(self) -> None:
        self.epoch = _epoch()
        self.sat = make_satellite(self.epoch)
        line1, line2 = exporter.export_tle(self.sat)
        self.tle = f"DPHI-CG2\n{line1}\n{line2}"

    def state(self, moment: datetime) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
        jd, fr = jday(moment.year, moment.month, moment.day, moment.hour, moment.minute,
                      moment.second + moment.microsecond / 1e6)
        error, position, velocity = self.sat.sgp4(jd, fr)
        if error:
            raise ValueError(f"sgp4 error {error}")
        return position, velocity

    def data(self, kind: str, moment: datetime) -> dict[str, object]:
        position, velocity = self.state(moment)
        sun = _sun_direction(moment)
        radius = math.sqrt(sum(c * c for c in position))
        along = sum(p * s for p, s in zip(position, sun, strict=True)) / radius
        shadow = along < 0 and radius * math.sqrt(max(0.0, 1 - along * along)) < 6378.137
        if kind == "position":
            return {"x": position[0], "y": position[1], "z": position[2]}
        if kind == "velocity":
            return {"vx": velocity[0], "vy": velocity[1], "vz": velocity[2]}
        if kind == "attitude":  # nadir pointing: a quaternion turning +z to -r, and the orbit rate
            q = _nadir_quaternion(position)
            rate = math.sqrt(sum(v * v for v in velocity)) / radius
            return {"qw": q[0], "qx": q[1], "qy": q[2], "qz": q[3], "wx": 0.0, "wy": -rate, "wz": 0.0}
        seconds = moment.timestamp()
        if kind == "power":
            solar = 0.0 if shadow else round(28.0 * max(0.2, along * 0.5 + 0.5), 2)
            load = round(14.0 + 3.0 * math.sin(seconds / 300.0), 2)
            channels = {f"ch{i}": {"status": "on" if i < 5 else "off", "consumption_w": round(load / 5, 2) if i < 5 else 0.0,
                                   "current_a": round(load / 5 / 5.0, 3) if i < 5 else 0.0} for i in range(8)}
            return {"battery_voltage": round(7.4 + (0.4 if not shadow else -0.2) + 0.05 * math.sin(seconds / 900.0), 3),
                    "solar_power_w": solar, "payload_power_w": load, "internal_power_w": round(load * 0.4, 2),
                    "eclipse": shadow, "channels": channels}
        base = 8.0 if shadow else 24.0
        return {f"sensor{i}": round(base + 3.0 * math.sin(seconds / 700.0 + i) + i * 0.7, 2) for i in range(8)}

    def record(self, kind: str, moment: datetime) -> dict[str, object]:
        stamp = int(moment.timestamp())
        return {"id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{kind}/{stamp}")), "timestamp": _iso(moment),
                "original_timestamp": stamp, "data_type": kind, "data": self.data(kind, moment),
                "created_at": _iso(moment + timedelta(seconds=2))}

    def instants(self, start: datetime | None, end: datetime | None) -> list[datetime]:
        now = datetime.fromtimestamp(int(datetime.now(timezone.utc).timestamp()) // CADENCE_S * CADENCE_S, timezone.utc)
        first = now - timedelta(seconds=HISTORY_S)
        lo = max(first, start) if start else first
        hi = min(now, end) if end else now
        out: list[datetime] = []
        moment = hi
        while moment >= lo and len(out) < MAX_RECORDS:
            out.append(moment)
            moment -= timedelta(seconds=CADENCE_S)
        return out

    def query(self, kinds: list[str], start: datetime | None, end: datetime | None, limit: int | None) -> list[dict[str, object]]:
        """Newest first, as the onboard database answers."""
        records: list[dict[str, object]] = []
        cap = min(limit if limit is not None else MAX_RECORDS, MAX_RECORDS)
        for moment in self.instants(start, end):
            for kind in kinds:
                if len(records) >= cap:
                    return records
                records.append(self.record(kind, moment))
        return records


def _sun_direction(moment: datetime) -> tuple[float, float, float]:
    """Unit vector to the sun (low-precision almanac, good to ~1°)."""
    days = (moment - datetime(2000, 1, 1, 12, tzinfo=timezone.utc)).total_seconds() / 86400.0
    mean_anomaly = math.radians((357.529 + 0.98560028 * days) % 360)
    longitude = math.radians((280.459 + 0.98564736 * days) % 360 + 1.915 * math.sin(mean_anomaly)
                             + 0.020 * math.sin(2 * mean_anomaly))
    obliquity = math.radians(23.439)
    return (math.cos(longitude), math.cos(obliquity) * math.sin(longitude), math.sin(obliquity) * math.sin(longitude))


def _nadir_quaternion(position: tuple[float, float, float]) -> tuple[float, float, float, float]:
    norm = math.sqrt(sum(c * c for c in position))
    down = tuple(-c / norm for c in position)
    axis = (-down[1], down[0], 0.0)  # (0, 0, 1) × down
    cos_angle = down[2]
    half = math.acos(max(-1.0, min(1.0, cos_angle))) / 2
    size = math.sqrt(axis[0] ** 2 + axis[1] ** 2) or 1.0
    return (math.cos(half), axis[0] / size * math.sin(half), axis[1] / size * math.sin(half), 0.0)


def image_names() -> list[str]:
    today = datetime.now(timezone.utc).date()
    return [(today - timedelta(days=i)).strftime("%Y%m%d") + ".png" for i in range(IMAGE_DAYS)]


def fisheye_png(name: str) -> bytes:
    """A fisheye frame: black outside the lens circle, sky above a curved Earth limb, a sun
    whose place depends on the image's name (so frames differ)."""
    seed = sum(name.encode())
    side = IMAGE_SIDE
    centre = side / 2
    sun = (centre + 25 * math.cos(seed), centre * 0.6 + 15 * math.sin(seed))
    rows = bytearray()
    for y in range(side):
        rows.append(0)
        for x in range(side):
            r = math.hypot(x - centre, y - centre)
            if r > centre - 1:
                pixel = (0, 0, 0)
            elif y > centre + 18 - (x - centre) ** 2 / 120:
                shade = int(90 + 60 * (y / side))
                pixel = (20, shade, 140)  # ocean and clouds
            else:
                glow = max(0.0, 1 - math.hypot(x - sun[0], y - sun[1]) / 12)
                pixel = (int(5 + 250 * glow), int(5 + 250 * glow), int(20 + 235 * glow))
            rows.extend(pixel)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(bytes(rows))) + chunk(b"IEND", b"")


def _time(value: str | None) -> datetime | None:
    if not value:
        return None
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


class Handler(BaseHTTPRequestHandler):
    server_version = "satellite-telemetry/0.1.0"
    telemetry: Telemetry

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
        pass  # pods' requests are not logged (CG2 keeps no pod console either)

    def _send(self, status: int, body: bytes, kind: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _json(self, data: object, status: int = 200, count: int | None = None, error: str | None = None) -> None:
        body = {"success": error is None, "data": data, "count": count, "error": error}
        self._send(status, json.dumps(body).encode(), "application/json")

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        path = url.path.rstrip("/") or "/"
        t = self.telemetry
        try:
            if path == "/health":
                self._json({"status": "healthy", "timestamp": _iso(datetime.now(timezone.utc))})
            elif path in ("/api/telemetry", "/api/telemetry/power"):
                kind = "power" if path.endswith("/power") else query.get("data_type") or query.get("datatype")
                kinds = [kind] if kind else list(TYPES)
                if kinds[0] not in TYPES:
                    self._json([], count=0)
                    return
                limit = query.get("limit")
                records = t.query(kinds, _time(query.get("start_time") or query.get("starttime")),
                                  _time(query.get("end_time") or query.get("endtime")), int(limit) if limit else None)
                self._json(records, count=len(records))
            elif path == "/api/telemetry/latest":
                kind = query.get("data_type") or query.get("datatype")
                kinds = [kind] if kind in TYPES else [] if kind else list(TYPES)
                now = t.instants(None, None)[0]
                records = [t.record(k, now) for k in kinds]
                self._json(records, count=len(records))
            elif path in ("/api/telemetry/types", "/types"):
                self._json(list(TYPES), count=len(TYPES))
            elif path in ("/api/telemetry/stats", "/stats"):
                moments = t.instants(None, None)
                self._json({"total_records": len(moments) * len(TYPES), "data_types_count": len(TYPES),
                            "data_type_breakdown": {k: len(moments) for k in TYPES},
                            "earliest_timestamp": _iso(moments[-1]), "latest_timestamp": _iso(moments[0])})
            elif path in ("/api/telemetry/tle", "/tle"):
                self._send(200, t.tle.encode(), "text/plain; charset=utf-8")
            elif path == "/api/images/list":
                names = image_names()
                self._json(names, count=len(names))
            else:
                self._json(None, status=404, error=f"no endpoint {url.path}")
        except ValueError as exc:
            self._json(None, status=400, error=f"Invalid query: {exc}")

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        if urlsplit(self.path).path.rstrip("/") != "/api/images":
            self._json(None, status=404, error=f"no endpoint {self.path}")
            return
        try:
            length = int(self.headers.get("Content-Length") or 0)
            if not 0 <= length <= MAX_BODY:
                raise ValueError("body too large")
            request = json.loads(self.rfile.read(length) or b"{}")
            if not isinstance(request, dict):
                raise ValueError("the body must be a JSON object")
            known = image_names()
            wanted = request.get("images")
            if wanted is not None:
                if not isinstance(wanted, list) or not all(isinstance(n, str) for n in wanted):
                    raise ValueError("images must be a list of names")
                missing = [n for n in wanted if n not in known]
                if missing:
                    self._json(None, status=404, error=f"File not found: {missing[0]}")
                    return
            else:
                limit = request.get("limit")
                wanted = known[: int(limit)] if limit is not None else known
        except (ValueError, TypeError) as exc:
            self._json(None, status=400, error=f"Invalid request: {exc}")
            return
        if len(wanted) == 1:
            self._send(200, fisheye_png(wanted[0]), "image/png")
            return
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:  # STORED, as onboard
            for name in wanted:
                archive.writestr(name, fisheye_png(name))
        self._send(200, buffer.getvalue(), "application/zip")


def main(argv: list[str]) -> None:
    port = int(argv[0]) if argv else 80
    address = argv[1] if len(argv) > 1 else ""  # all of the container's addresses: its network's only
    Handler.telemetry = Telemetry()
    ThreadingHTTPServer((address, port), Handler).serve_forever()


if __name__ == "__main__":
    main(sys.argv[1:])
