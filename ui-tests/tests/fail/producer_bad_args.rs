// A producer names a known broker, a valid destination and its payload.
patron::producer!(rabbit = "orders", payload = String);
patron::producer!(kafka = "orders placed", payload = String);
patron::producer!(sqs = "audit-log");
patron::producer!(amqp = "orders", payload = String, exchange = "events");

fn main() {}
