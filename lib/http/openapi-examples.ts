// The example bodies of the OpenAPI document: those of Sensu's APIKey API reference
// (../shared/reference/apikey-api.md; test/openapi.test.ts holds them equal to
// test/fixtures/reference-examples.ts). An answer adds what the server fills in: the user, the
// creation time and, for a create, the secret.

const filters = { 'entity.system.os': 'linux', 'entity.system.arch': 'amd64' }

const influxdbHandler = {
  url: 'https://github.com/sensu/sensu-influxdb-handler/releases/download/3.1.2/sensu-influxdb-handler_3.1.2_linux_amd64.tar.gz',
  sha512: '612c6ff9928841090c4d23bf20aaf7558e4eed8977a848cf9e2899bb13a13e7540bac2b63e324f39d9b1257bb479676bc155b24e21bf93c722b812b0f15cb3bd',
  filters,
  headers: null,
  metadata: { name: 'sensu-influxdb-handler', namespace: 'default' }
}

const slackHandler = {
  url: 'https://github.com/sensu/sensu-slack-handler/releases/download/1.0.3/sensu-slack-handler_1.0.3_linux_amd64.tar.gz',
  sha512: '68720865127fbc7c2fe16ca4d7bbf2a187a2df703f4b4acae1c93e8a66556e9079e1270521999b5871473e6c851f51b34097c54fdb8d18eedb7064df9019adc8',
  filters: null,
  metadata: { name: 'sensu-slack-handler', namespace: 'default' }
}

/** The reference's POST payload, as it stands. */
export const postPayload = {
  url: 'https://asset-url.tar.gz',
  sha512: 'xxxxxxxxxxxxxxxxxxxxx',
  filters,
  headers: { Authorization: 'Bearer $TOKEN', 'X-Forwarded-For': 'client1, proxy1, proxy2' },
  metadata: { name: 'apikey-id', namespace: 'default' }
}

/** A reference body as the server answers it: with the fields it sets. */
function answered<T extends { metadata: object }> (body: T) {
  return { ...body, metadata: { ...body.metadata, created_by: 'admin' }, username: 'admin', created_at: 1718000000 }
}

const example = (summary: string, value: unknown) => ({ summary, value })

export const examples = {
  createRequest: { reference: example('The reference\'s POST payload (the server makes the name)', postPayload) },
  created: { reference: example('The key made from the reference\'s payload, with its secret', { ...answered(postPayload), key: 'sak_' + 'x'.repeat(49) }) },
  list: { reference: example('The reference\'s list output', [answered(influxdbHandler), answered(slackHandler)]) },
  get: { reference: example('The reference\'s GET output', answered(postPayload)) },
  patchRequest: { labels: example('Set a label, drop the expiry', { metadata: { labels: { team: 'ops' } }, expires_at: null }) },
  rotateRequest: { grace: example('A new secret; the old one keeps working for an hour', { grace_seconds: 3600 }) },
  rotated: { reference: example('The reference\'s key with its new secret', { ...answered(postPayload), rotated_at: 1718003600, key: 'sak_' + 'y'.repeat(49) }) }
}
