//! The greeter example's gRPC service (`greeter.v1.Greeter`): the messages,
//! the server trait and the client, as tonic generates them, plus the
//! encoded file descriptor set that server reflection serves.

#![allow(missing_docs, clippy::all, clippy::pedantic)]

tonic::include_proto!("greeter.v1");

/// The encoded `FileDescriptorSet` of `greeter.proto`, for reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("greeter_descriptor");
