// Medplum's Hl7Server (npm @medplum/hl7) as a peer: parses each message and answers with
// message.buildAck(). Stores nothing. Prints its port on the first line of standard output.
// Usage: node medplum_server.mjs [PORT]   (0 = any free port)
import { Hl7Server } from '@medplum/hl7';

const port = Number(process.argv[2] ?? 0);
const server = new Hl7Server((connection) => {
  connection.addEventListener('message', ({ message }) => {
    connection.send(message.buildAck());
  });
});
await server.start(port);
console.log(server.server.address().port);
