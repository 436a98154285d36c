"""bench.timeit: timing commands, and --wait-http polling a service (loopback only)."""

import http.server
import json
import socket
import sys
import threading
import time

from bench import timeit


class Quiet(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"hello\n")

    def log_message(self, *args):
        pass


def serve_later(port_holder: dict, delay: float) -> threading.Thread:
    """An HTTP server on the port in port_holder, listening only after `delay`."""
    def run():
        time.sleep(delay)
        server = http.server.HTTPServer(("127.0.0.1", port_holder["port"]), Quiet)
        port_holder["server"] = server
        server.serve_forever(poll_interval=0.05)
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_plain_timing_prints_samples(capsys):
    assert timeit.main(["--repeat", "2", "--warmup", "1", "--", sys.executable, "-c", "pass"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out["samples"]) == 2 and out["failures"] == [] and "details" not in out


def test_wait_http_times_the_command_and_the_wait_for_the_first_answer(capsys):
    holder = {"port": free_port()}
    serve_later(holder, 0.3)
    try:
        code = timeit.main(["--repeat", "1", "--warmup", "0", "--wait-http", f"127.0.0.1:{holder['port']}",
                            "--poll-interval", "0.003", "--", sys.executable, "-c", "import time; time.sleep(0.1)"])
    finally:
        for _ in range(50):
            if "server" in holder:
                break
            time.sleep(0.05)
        holder["server"].shutdown()
    out = json.loads(capsys.readouterr().out)
    assert code == 0, out
    (sample,), (details,) = out["samples"], out["details"]
    assert 0.3 <= sample < 1.5
    assert details["command"] >= 0.1 and details["answer_after_exit"] > 0.1
    assert details["attempts"] > 3   # refused while the server was not listening, polled again


def test_wait_http_gives_up_after_its_timeout(capsys):
    port = free_port()   # nothing listens there
    code = timeit.main(["--repeat", "1", "--warmup", "0", "--wait-http", f"127.0.0.1:{port}",
                        "--wait-timeout", "0.2", "--", sys.executable, "-c", "pass"])
    out = json.loads(capsys.readouterr().out)
    assert code == 1 and out["samples"] == [] and "no HTTP answer" in out["failures"][0]


def test_http_ok_wants_status_200():
    assert timeit.http_ok("127.0.0.1", free_port(), 0.2) is False
