"""``llmgan serve RUN_DIR``: the HTTP service (llmgan.serve.app)."""

from __future__ import annotations


def cmd_serve(args) -> int:
    from llmgan.serve.app import make_server

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    server = make_server(args.run_dir, host=args.host, port=args.port, device=args.device, max_n=args.max_n)
    host, port = server.server_address[:2]
    print(f"llmgan serving {args.run_dir} on http://{host}:{port} (GET /health, POST /generate, POST /detect)",
          flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def register(sub) -> None:
    s = sub.add_parser("serve", help="HTTP service over a run: /health, /generate, /detect")
    s.add_argument("run_dir")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--device", default="cpu")
    s.add_argument("--max-n", type=int, default=256, help="most samples/texts per request")
    s.add_argument("--threads", type=int, default=None)
    s.set_defaults(func=cmd_serve)
