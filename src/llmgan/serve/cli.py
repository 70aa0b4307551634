"""``llmgan serve RUN_DIR [RUN_DIR ...]``: the FastAPI service (llmgan.serve.app) on uvicorn."""

from __future__ import annotations

import ipaddress
import os
import sys


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def per_model(specs: list[str] | None, run_dirs: list[str], flag: str) -> dict[str, str]:
    """``[MODEL=]FILE`` options -> model id -> file: a plain FILE applies to every model, ``MODEL=FILE`` to
    the run named MODEL (a later spec for the same model wins)."""
    from llmgan.errors import ConfigError
    from llmgan.serve.service import Registry

    ids = [Registry.model_id(d) for d in run_dirs]
    out: dict[str, str] = {}
    for spec in specs or ():
        name, sep, path = spec.partition("=")
        if sep and name in ids:
            out[name] = path
        elif sep and not os.path.exists(spec):
            raise ConfigError(f"serve: {flag} {spec}: no loaded model is named {name!r} (loaded: {sorted(ids)})")
        else:
            out.update({i: spec for i in ids})
    return out


def cmd_serve(args) -> int:
    from llmgan.errors import ConfigError

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    api_key = args.api_key or os.environ.get("LLMGAN_API_KEY") or None
    if not _loopback(args.host) and api_key is None:
        raise ConfigError(f"serve: --host {args.host} is reachable from other machines; give --api-key KEY "
                          "(or LLMGAN_API_KEY), or keep the default 127.0.0.1")
    for name, v in (("--max-n", args.max_n), ("--max-tokens", args.max_tokens), ("--max-texts", args.max_texts),
                    ("--max-concurrent", args.max_concurrent), ("--max-body", args.max_body)):
        if v < 1:
            raise ConfigError(f"serve: {name} must be at least 1, got {v}")
    if args.timeout <= 0:
        raise ConfigError(f"serve: --timeout must be positive, got {args.timeout}")
    from llmgan.serve.app import Settings, create_asgi
    from llmgan.serve.server import bind, make_server
    from llmgan.serve.service import Limits, Registry

    if args.calibration_n < 1:
        raise ConfigError(f"serve: --calibration-n must be at least 1, got {args.calibration_n}")
    if args.max_candidates < 1 or args.max_batch_rows < 1:
        raise ConfigError("serve: --max-candidates and --max-batch-rows must be at least 1")
    if not args.batch_window_ms >= 0:
        raise ConfigError(f"serve: --batch-window-ms must be >= 0, got {args.batch_window_ms}")
    from llmgan.filters import load_filter
    from llmgan.models.watermark import load_key

    # keys and filters are read before any run loads: a bad file is one line, not a half-started server
    keys = {f: load_key(f) for f in set(per_model(args.watermark, args.run_dir, "--watermark").values())}
    watermarks = {m: keys[f] for m, f in per_model(args.watermark, args.run_dir, "--watermark").items()}
    filter_files = per_model(args.filter_config, args.run_dir, "--filter-config")
    flts = {f: load_filter(f, device=args.device) for f in set(filter_files.values())}
    filters = {m: flts[f] for m, f in filter_files.items()}
    print(f"llmgan serve: loading {len(args.run_dir)} run(s), calibrating their detectors", file=sys.stderr,
          flush=True)
    registry = Registry.load(args.run_dir, device=args.device, calibration_n=args.calibration_n,
                             sweeps=args.sweep or (), watermarks=watermarks, filters=filters,
                             batch_window_s=None if args.no_batching else args.batch_window_ms / 1000,
                             max_batch_rows=args.max_batch_rows,
                             limits=Limits(args.max_n, args.max_tokens, args.max_texts, args.timeout,
                                           args.max_candidates))
    settings = Settings(api_key=api_key, max_body=args.max_body, max_concurrent=args.max_concurrent,
                        body_timeout_s=args.header_timeout)
    sock = bind(args.host, args.port)
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    print(f"llmgan serving {', '.join(registry.models)} on http://{shown}:{port}/ (the page; API under /v1, "
          f"docs at /docs)", flush=True)
    server = make_server(create_asgi(registry, settings), header_timeout=args.header_timeout,
                         log_level=args.log_level)
    server.run(sockets=[sock])
    return 0


def register(sub) -> None:
    s = sub.add_parser("serve", help="HTTP service over runs: OpenAI-compatible API, /v1/generate, "
                                     "/v1/score, /v1/detect and a page")
    s.add_argument("run_dir", nargs="+", help="run directories; each is served as a model named after it")
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--api-key", default=None, help="require 'Authorization: Bearer KEY' on /v1/ (also "
                                                  "LLMGAN_API_KEY)")
    s.add_argument("--device", default="cpu")
    s.add_argument("--max-n", type=int, default=64, help="most samples per request (per model)")
    s.add_argument("--max-tokens", type=int, default=512, help="most tokens per sample (per model)")
    s.add_argument("--max-texts", type=int, default=256, help="most texts per /v1/score or /v1/detect request")
    s.add_argument("--timeout", type=float, default=30.0, help="seconds a request may take (then 503)")
    s.add_argument("--max-concurrent", type=int, default=16, help="requests in flight before 429s")
    s.add_argument("--max-body", type=int, default=1 << 20, help="largest request body in bytes (413 above)")
    s.add_argument("--header-timeout", type=float, default=10.0,
                   help="seconds a client has to send its headers, and again its body")
    s.add_argument("--calibration-n", type=int, default=500,
                   help="samples for the detector's threshold, calibrated at start-up unless detector.json "
                        "already holds one for the run's checkpoint")
    s.add_argument("--watermark", action="append", metavar="[MODEL=]KEYFILE",
                   help="watermark every sample with this key (llmgan watermark keygen); MODEL= for one run only. "
                        "The key never leaves the server: responses carry its key id")
    s.add_argument("--filter-config", action="append", metavar="[MODEL=]FILE",
                   help="output filter (docs/safety.md): a filtered sample is dropped and counted in the response")
    s.add_argument("--max-candidates", type=int, default=16, help="most resample candidates per output (per model)")
    s.add_argument("--batch-window-ms", type=float, default=2.0,
                   help="unseeded requests for one model arriving within this window share one sampling call")
    s.add_argument("--max-batch-rows", type=int, default=256, help="most sampled rows in one batched call")
    s.add_argument("--no-batching", action="store_true", help="sample every request on its own")
    s.add_argument("--sweep", action="append", help="a sweep.csv (llmgan sweep/report) to plot on the page")
    s.add_argument("--log-level", default="info", choices=("critical", "error", "warning", "info", "debug"))
    s.add_argument("--threads", type=int, default=None)
    s.set_defaults(func=cmd_serve)
