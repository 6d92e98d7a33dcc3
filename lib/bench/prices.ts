/**
 * The prices the cost model uses: AWS public list prices for us-east-1, on-demand, before any
 * free tier or savings plan. Each carries where it comes from and when it was taken. Prices
 * change and differ by region (the replica regions are priced at us-east-1 rates here): check
 * them against the pages below or the AWS Pricing Calculator before relying on a figure.
 */
export interface Price {
  /** Dollars per one unit. */
  usd: number;
  unit: string;
  source: string;
  asOf: string;
}

const asOf = 'list price as of 2026, verify';

export const priceTable = {
  dynamodbWriteRequestUnit: {
    usd: 0.625 / 1e6,
    unit: 'DynamoDB on-demand write request unit (us-east-1; $0.625 per million)',
    source: 'https://aws.amazon.com/dynamodb/pricing/on-demand/',
    asOf,
  },
  dynamodbReadRequestUnit: {
    usd: 0.125 / 1e6,
    unit: 'DynamoDB on-demand read request unit (us-east-1; $0.125 per million)',
    source: 'https://aws.amazon.com/dynamodb/pricing/on-demand/',
    asOf,
  },
  dynamodbReplicatedWriteRequestUnit: {
    usd: 0.625 / 1e6,
    unit: 'DynamoDB global tables replicated write request unit, on-demand (us-east-1; $0.625 per million)',
    source: 'https://aws.amazon.com/dynamodb/pricing/on-demand/',
    asOf,
  },
  sqsFifoRequest: {
    usd: 0.5 / 1e6,
    unit: 'SQS FIFO request, each 64 KiB of payload one request ($0.50 per million)',
    source: 'https://aws.amazon.com/sqs/pricing/',
    asOf,
  },
  lambdaRequest: {
    usd: 0.2 / 1e6,
    unit: 'Lambda invocation ($0.20 per million)',
    source: 'https://aws.amazon.com/lambda/pricing/',
    asOf,
  },
  lambdaArmGbSecond: {
    usd: 0.0000133334,
    unit: 'Lambda arm64 GB-second (first tier; $0.0000133334)',
    source: 'https://aws.amazon.com/lambda/pricing/',
    asOf,
  },
  apiGatewayRestRequest: {
    usd: 3.5 / 1e6,
    unit: 'API Gateway REST API request (first 333 million per month; $3.50 per million)',
    source: 'https://aws.amazon.com/api-gateway/pricing/',
    asOf,
  },
  interRegionTransferGb: {
    usd: 0.02,
    unit: 'data transfer from us-east-1 to another AWS region, per GB ($0.02)',
    source: 'https://aws.amazon.com/ec2/pricing/on-demand/#Data_Transfer',
    asOf,
  },
} as const satisfies Record<string, Price>;

export type PriceKey = keyof typeof priceTable;
export type PriceTable = Record<PriceKey, Price>;
