import * as apigateway from 'aws-cdk-lib/aws-apigateway';
import { limits } from '../core/limits.ts';
import type { InfraConfig } from './config.ts';

/**
 * API Gateway answers some requests itself, before or instead of the handler: an unsigned or
 * denied request (403), the stage's throttle (429), a body over 10 MB (413), a function that
 * failed or ran past 29 s (5xx). Its default body is `{"message":"..."}`; these gateway
 * responses give every one of them the handler's `{"error","message"}` shape, so a client
 * parses one error format whoever answered. Status codes stay API Gateway's own per type.
 */

/** One gateway response: its type, the `error` code, and the message (a JSON string literal or a VTL reference). */
export interface GatewayError {
  /** Construct id under the RestApi (and the CloudFormation logical id's stem). */
  id: string;
  type: apigateway.ResponseType;
  error: string;
  /** Inserted as is into the JSON body: a quoted literal, or `$context.error.messageString` (itself quoted). */
  message: string;
  /** Static response headers, values unquoted here (the construct quotes them for API Gateway). */
  headers?: Record<string, string>;
}

/** API Gateway's own message for the response, already a quoted JSON string. */
const gatewayMessage = '$context.error.messageString';

const literal = (text: string) => JSON.stringify(text);

/** The body template of a gateway error, exactly the handler's `{"error","message"}` shape. */
export function gatewayErrorTemplate(entry: Pick<GatewayError, 'error' | 'message'>): string {
  return `{"error":${literal(entry.error)},"message":${entry.message}}`;
}

/**
 * Every gateway response the API customizes; the two defaults cover the types not listed.
 * `routes` (`GET /kv`, ...) are named in the missing-route message.
 */
export function gatewayErrors(config: InfraConfig, routes: readonly string[]): GatewayError[] {
  const retryAfter = { 'Retry-After': String(limits.retryAfterSeconds) };
  return [
    // IAM (SigV4) outcomes. A path or method the API does not have is also answered as a missing
    // token by a REST API with IAM auth: API Gateway cannot tell the two apart.
    {
      id: 'MissingAuthenticationToken',
      type: apigateway.ResponseType.MISSING_AUTHENTICATION_TOKEN,
      error: 'MissingAuthentication',
      message: literal(`the request is not signed with SigV4 (service execute-api), or no route matches its method and path; routes: ${routes.join(', ')}`),
    },
    { id: 'AccessDenied', type: apigateway.ResponseType.ACCESS_DENIED, error: 'AccessDenied', message: gatewayMessage },
    { id: 'InvalidSignature', type: apigateway.ResponseType.INVALID_SIGNATURE, error: 'InvalidSignature', message: gatewayMessage },
    { id: 'ExpiredToken', type: apigateway.ResponseType.EXPIRED_TOKEN, error: 'ExpiredToken', message: gatewayMessage },
    {
      id: 'Throttled',
      type: apigateway.ResponseType.THROTTLED,
      error: 'Throttled',
      message: literal(
        `too many requests: this API takes ${config.apiRateLimitPerSecond} requests a second (bursts of ${config.apiBurstLimit}); retry after ${limits.retryAfterSeconds} s`,
      ),
      headers: retryAfter,
    },
    {
      id: 'QuotaExceeded',
      type: apigateway.ResponseType.QUOTA_EXCEEDED,
      error: 'Throttled',
      message: gatewayMessage,
      headers: retryAfter,
    },
    { id: 'RequestTooLarge', type: apigateway.ResponseType.REQUEST_TOO_LARGE, error: 'TooLarge', message: literal('the request is larger than API Gateway accepts (10 MB); values are at most 256 KiB') },
    { id: 'BadRequestParameters', type: apigateway.ResponseType.BAD_REQUEST_PARAMETERS, error: 'BadRequest', message: gatewayMessage },
    { id: 'BadRequestBody', type: apigateway.ResponseType.BAD_REQUEST_BODY, error: 'BadRequest', message: gatewayMessage },
    { id: 'ResourceNotFound', type: apigateway.ResponseType.RESOURCE_NOT_FOUND, error: 'NotFound', message: gatewayMessage },
    // The function did not answer in time or failed: a write's outcome is unknown, not failed.
    {
      id: 'IntegrationTimeout',
      type: apigateway.ResponseType.INTEGRATION_TIMEOUT,
      error: 'IntegrationTimeout',
      message: literal('the function did not answer within API Gateway\'s 29 s; a write may or may not have been applied: read the key before retrying'),
      headers: retryAfter,
    },
    {
      id: 'IntegrationFailure',
      type: apigateway.ResponseType.INTEGRATION_FAILURE,
      error: 'IntegrationFailure',
      message: literal('API Gateway could not get an answer from the function; a write may or may not have been applied: read the key before retrying'),
      headers: retryAfter,
    },
    { id: 'Default4xx', type: apigateway.ResponseType.DEFAULT_4XX, error: 'RequestRefused', message: gatewayMessage },
    // Among them the 502 of a function that threw or answered malformed.
    { id: 'Default5xx', type: apigateway.ResponseType.DEFAULT_5XX, error: 'GatewayError', message: gatewayMessage, headers: retryAfter },
  ];
}

/** Adds every gateway response of `gatewayErrors` to the API, JSON bodies and static headers. */
export function addGatewayErrors(api: apigateway.RestApi, config: InfraConfig, routes: readonly string[]): apigateway.GatewayResponse[] {
  return gatewayErrors(config, routes).map((entry) =>
    api.addGatewayResponse(entry.id, {
      type: entry.type,
      responseHeaders: Object.fromEntries(
        Object.entries({ 'Content-Type': 'application/json; charset=utf-8', ...entry.headers }).map(([name, value]) => [name, `'${value}'`]),
      ),
      templates: { 'application/json': gatewayErrorTemplate(entry) },
    }),
  );
}
