#!/usr/bin/env node
// Example producer for the moderation worker, using only the published contract:
// the JSON Schemas in ../../schemas and the RabbitMQ queue/exchange names.
//
//   node producer.js "some text"     publish one request, wait for its verdict
//   node producer.js --check-invalid show a bad request being rejected by the schema
//
// Environment:
//   MODERATION_BROKER_URL         amqp://guest:guest@127.0.0.1:5672/ (default vhost "/")
//   MODERATION_VERDICT_TIMEOUT_S  60
//
// Exit status: 0 on success; 1 on timeout, schema failure or broker error; 2 on bad usage.
'use strict';

const crypto = require('node:crypto');
const fs = require('node:fs');
const path = require('node:path');

const amqp = require('amqplib');
const Ajv2020 = require('ajv/dist/2020');
const addFormats = require('ajv-formats');

const SCHEMA_DIR = path.resolve(__dirname, '..', '..', 'schemas');
const REQUESTS_QUEUE = 'moderation.requests';
const VERDICTS_EXCHANGE = 'moderation.verdicts';
const DEFAULT_URL = 'amqp://guest:guest@127.0.0.1:5672/';
const DEFAULT_TEXT = 'hello from the Node.js example producer';

class Failure extends Error {}

// ---------------------------------------------------------------------------------------
// Schemas

function loadValidators() {
  // JSON Schema draft 2020-12, so Ajv's 2020 build. allErrors: report every problem.
  const ajv = new Ajv2020({ allErrors: true, strict: true });
  addFormats(ajv); // "date-time" (author.created_at) and the other standard formats
  const load = (name) => {
    const file = path.join(SCHEMA_DIR, name);
    let schema;
    try {
      schema = JSON.parse(fs.readFileSync(file, 'utf8'));
    } catch (err) {
      throw new Failure(`cannot load schema ${file}: ${err.message}`);
    }
    return ajv.compile(schema);
  };
  return {
    request: load('moderation-request.v1.json'),
    verdict: load('moderation-verdict.v1.json'),
  };
}

function describeErrors(validate) {
  return (validate.errors || [])
    .map((e) => {
      const where = e.instancePath || '(root)';
      const extra = e.params && e.params.additionalProperty ? `: '${e.params.additionalProperty}'` : '';
      return `${where} ${e.message}${extra}`;
    })
    .join('; ');
}

// ---------------------------------------------------------------------------------------
// --check-invalid: the schema catches bad requests before they reach the broker

function checkInvalid(validators) {
  const cases = [
    { label: 'wrong id type, text missing', message: { id: 5 } },
    { label: 'unknown field (typo)', message: { id: 'typo-1', text: 'hi', metdata: {} } },
  ];
  let allRejected = true;
  for (const { label, message } of cases) {
    const ok = validators.request(message);
    console.log(`request ${JSON.stringify(message)} (${label}):`);
    if (ok) {
      console.log('  ACCEPTED by the schema (unexpected)');
      allRejected = false;
      continue;
    }
    console.log(`  rejected: ${describeErrors(validators.request)}`);
    console.log(`  ajv errors: ${JSON.stringify(validators.request.errors)}`);
  }
  if (!allRejected) throw new Failure('an invalid request passed schema validation');
  console.log('invalid requests rejected client-side: ok');
}

// ---------------------------------------------------------------------------------------
// Publish one request and wait for its verdict

function brokerUrl() {
  const url = process.env.MODERATION_BROKER_URL || DEFAULT_URL;
  // amqplib takes the vhost from the URL path: "/" or "" or "/%2f" is the default vhost,
  // "/name" is vhost "name". (The Python side writes the default vhost as "//", which
  // amqplib also reads as "/".)
  return url;
}

function redact(url) {
  return url.replace(/\/\/([^:/@]+):([^@]*)@/, '//$1:***@');
}

function withTimeout(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Failure(`timed out after ${ms / 1000} s ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

async function produce(validators, text, timeoutMs) {
  const request = {
    id: `node-${crypto.randomUUID()}`,
    text,
    metadata: { producer: 'moderation-node-example', sent_at: new Date().toISOString() },
  };
  if (!validators.request(request)) {
    throw new Failure(
      `request does not match moderation-request.v1.json: ${describeErrors(validators.request)}`,
    );
  }

  const url = brokerUrl();
  let conn;
  try {
    conn = await amqp.connect(url, {
      clientProperties: { connection_name: 'moderation-node-example' },
    });
  } catch (err) {
    throw new Failure(`cannot connect to ${redact(url)}: ${err.message}`);
  }

  // A connection or channel error (e.g. the broker closing the channel) must not crash
  // the process with an unhandled 'error' event; it fails the run instead.
  let brokerError = null;
  let failBroker;
  const brokerFailed = new Promise((_, reject) => {
    failBroker = reject;
  });
  brokerFailed.catch(() => {});
  const onBrokerError = (where) => (err) => {
    brokerError = brokerError || new Failure(`${where}: ${err.message}`);
    failBroker(brokerError);
  };
  conn.on('error', onBrokerError('connection error'));
  conn.on('close', (err) => {
    if (err) onBrokerError('connection closed')(err);
  });

  try {
    const ch = await conn.createConfirmChannel();
    ch.on('error', onBrokerError('channel error'));

    // The worker declares the topology; a producer only checks it is there (a passive
    // declare: no risk of declaring the quorum queue with different arguments).
    try {
      await ch.checkQueue(REQUESTS_QUEUE);
      await ch.checkExchange(VERDICTS_EXCHANGE);
    } catch (err) {
      throw new Failure(
        `${err.message} -- the worker declares the queues at start: is a worker running on ${redact(url)}?`,
      );
    }

    // Our own exclusive, auto-delete, server-named queue bound to every verdict; bound
    // BEFORE publishing so our verdict cannot be missed.
    const { queue } = await ch.assertQueue('', { exclusive: true, autoDelete: true, durable: false });
    await ch.bindQueue(queue, VERDICTS_EXCHANGE, '#');

    let resolveVerdict;
    let rejectVerdict;
    const verdictArrived = new Promise((resolve, reject) => {
      resolveVerdict = resolve;
      rejectVerdict = reject;
    });
    await ch.consume(
      queue,
      (msg) => {
        if (msg === null) {
          rejectVerdict(new Failure('verdict consumer was cancelled by the broker'));
          return;
        }
        let verdict;
        try {
          verdict = JSON.parse(msg.content.toString('utf8'));
        } catch {
          return; // not ours to judge; a verdict for our id is checked below
        }
        if (!verdict || verdict.id !== request.id) return; // another producer's verdict
        if (!validators.verdict(verdict)) {
          rejectVerdict(
            new Failure(
              `verdict for ${request.id} does not match moderation-verdict.v1.json: ${describeErrors(validators.verdict)}`,
            ),
          );
          return;
        }
        resolveVerdict(verdict); // verdicts are at-least-once: the first one wins
      },
      { noAck: true, exclusive: true },
    );

    // Publish: persistent, mandatory, confirmed. With mandatory, an unroutable message
    // comes back as basic.return before its ack, so check both.
    let returned = null;
    ch.on('return', (msg) => {
      if (msg.properties.messageId === request.id) returned = msg.fields;
    });
    const body = Buffer.from(JSON.stringify(request), 'utf8');
    const confirmed = new Promise((resolve, reject) => {
      ch.publish(
        '',
        REQUESTS_QUEUE,
        body,
        {
          persistent: true,
          mandatory: true,
          contentType: 'application/json',
          contentEncoding: 'utf-8',
          messageId: request.id,
          appId: 'moderation-node-example',
          timestamp: Math.floor(Date.now() / 1000),
        },
        (err) => {
          if (err) {
            reject(
              new Failure(
                `broker nacked request ${request.id} (queue full? it rejects publishes on overflow): ${err.message || err}`,
              ),
            );
          } else if (returned) {
            reject(
              new Failure(
                `request ${request.id} was returned unroutable: ${returned.replyCode} ${returned.replyText}`,
              ),
            );
          } else {
            resolve();
          }
        },
      );
    });
    await withTimeout(Promise.race([confirmed, brokerFailed]), timeoutMs, `waiting for the broker to confirm ${request.id}`);
    console.error(`published ${request.id} to ${REQUESTS_QUEUE} (confirmed), waiting for its verdict...`);

    const verdict = await withTimeout(
      Promise.race([verdictArrived, brokerFailed]),
      timeoutMs,
      `waiting for the verdict of ${request.id} (is a worker consuming ${REQUESTS_QUEUE}? a request the worker cannot process goes to moderation.dead instead)`,
    );
    return verdict;
  } finally {
    try {
      await withTimeout(conn.close(), 5000, 'closing the connection');
    } catch {
      // already closed or broken: nothing left to release
    }
  }
}

// ---------------------------------------------------------------------------------------

function parseArgs(argv) {
  const opts = { checkInvalid: false, words: [] };
  for (const arg of argv) {
    if (arg === '--check-invalid') opts.checkInvalid = true;
    else if (arg === '-h' || arg === '--help') opts.help = true;
    else if (arg.startsWith('--')) throw new Failure(`unknown option ${arg}`);
    else opts.words.push(arg);
  }
  return opts;
}

async function main() {
  let opts;
  try {
    opts = parseArgs(process.argv.slice(2));
  } catch (err) {
    console.error(`usage: node producer.js [--check-invalid] [text...]\n${err.message}`);
    return 2;
  }
  if (opts.help) {
    console.log('usage: node producer.js [--check-invalid] [text...]');
    return 0;
  }
  const validators = loadValidators();
  if (opts.checkInvalid) {
    checkInvalid(validators);
    return 0;
  }
  const timeoutS = Number(process.env.MODERATION_VERDICT_TIMEOUT_S || 60);
  if (!Number.isFinite(timeoutS) || timeoutS <= 0) {
    throw new Failure(`MODERATION_VERDICT_TIMEOUT_S must be a positive number, got ${timeoutS}`);
  }
  const text = opts.words.length ? opts.words.join(' ') : DEFAULT_TEXT;
  const verdict = await produce(validators, text, timeoutS * 1000);
  console.log(JSON.stringify(verdict, null, 2));
  console.log(`verdict ${verdict.id}: ${verdict.action} (${verdict.source})`);
  return 0;
}

function finish(code) {
  process.exitCode = code;
  // Normally nothing is left open and Node exits now; if a broken socket lingers, do
  // not hang (the timer is unref'd, so it does not itself keep the process alive).
  setTimeout(() => process.exit(code), 2000).unref();
}

main().then(finish, (err) => {
  console.error(`error: ${err instanceof Failure ? err.message : err.stack || err}`);
  finish(1);
});
