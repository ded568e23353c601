"""The yardstick for the service's overhead: one process, a websocket, the model, nothing between.

    .venv/bin/python -m benchmarks.direct_server [--port 8765] [--weights PATH] [--device cpu]

A plain asyncio websocket server (the `websockets` library, compression off, as the service)
that answers the service's protocol at /ws/predict/ by running the worker's own code
(`classifier.serving.batch.answer_batch`: decode, preprocess, one model call, the same answer
frame) on each request as it comes, on the event loop: no queue, no batching, no second process.
`python -m benchmarks.load --direct` runs the same phases against it and the service in one run and
prints the ratios. Frames that are not predicts get the service's `bad_frame` error.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import torch
from django.conf import settings
from websockets.asyncio.server import ServerConnection, serve

from benchmarks import options
from classifier.ml.inference import Predictor
from classifier.serving import protocol
from classifier.serving.batch import answer_batch
from classifier.serving.enqueue import task_kwargs
from classifier.serving.protocol import PredictRequest

READY = "Direct server listening"


async def serve_socket(connection: ServerConnection, predictor: Predictor) -> None:
    async for frame in connection:
        text, data = (frame, None) if isinstance(frame, str) else (None, frame)
        try:
            request = protocol.parse_frame(text, data)
            if not isinstance(request, PredictRequest):
                raise protocol.ProtocolError(
                    protocol.BAD_FRAME, "Only predict frames here.", request.id
                )
        except protocol.ProtocolError as exc:
            await connection.send(
                protocol.encode(protocol.error(exc.request_id, exc.code, exc.message))
            )
            continue
        now = time.time()
        item = task_kwargs(request, "direct", 0, now + settings.DIGITS_REQUEST_TIMEOUT, "", now)
        (answer,) = answer_batch([item], predictor)
        await connection.send(protocol.encode(answer.message["frame"]))


async def main_async(host: str, port: int, predictor: Predictor) -> None:
    async def handler(connection: ServerConnection) -> None:
        await serve_socket(connection, predictor)

    async with serve(
        handler, host, port, compression=None, max_size=settings.DIGITS_WS_MAX_MESSAGE_BYTES
    ):
        print(f"{READY} on ws://{host}:{port}/{protocol.PREDICT_PATH}", flush=True)
        await asyncio.get_running_loop().create_future()  # until killed


def main() -> int:
    options.setup_django()
    parser = options.parser(__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="address (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8765, help="port (default: 8765)")
    parser.add_argument(
        "--weights",
        type=Path,
        default=Path(settings.DIGITS_WEIGHTS),
        help="weights to serve (default: DIGITS_WEIGHTS, the service's)",
    )
    options.add_device(parser)
    parser.add_argument(
        "--threads",
        type=int,
        default=settings.DIGITS_TORCH_THREADS or 1,
        help="torch CPU threads (default: the worker's, DIGITS_TORCH_THREADS, else 1)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    predictor = Predictor.load(args.weights, device=args.device)
    predictor.warm_up()
    asyncio.run(main_async(args.host, args.port, predictor))
    return 0


if __name__ == "__main__":
    sys.exit(main())
