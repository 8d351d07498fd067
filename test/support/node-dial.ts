// The shim's transport port (cni-shim/grpc-unary.ts `Dial`) over node:net, so tests under Node can drive
// the same call code the Bun-compiled shim runs over Bun's sockets.
import net from "node:net";
import type { Conn, Dial } from "../../cni-shim/grpc-unary.js";

export const nodeDial: Dial = (path, events) =>
  new Promise<Conn>((resolve, reject) => {
    const socket = net.connect(path);
    let connected = false;
    socket.once("connect", () => {
      connected = true;
      resolve({ write: (bytes) => void socket.write(bytes), close: () => socket.destroy() });
    });
    socket.on("data", (bytes: Buffer) => events.data(bytes));
    socket.on("error", (err) => {
      if (!connected) reject(err);
    });
    socket.on("close", (hadError) => {
      if (connected) events.closed(hadError ? new Error("connection error") : undefined);
    });
  });
