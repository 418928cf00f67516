//! A RabbitMQ URL as patron's AMQP connections open it: lapin's parse, with
//! the frame size patron asks the broker for unless the URL names one.

use lapin::uri::AMQPUri;

use super::{BrokerUrl, redact};

/// The largest AMQP frame, in bytes, that patron's consumers and publishers
/// ask the broker for when the URL has no `frame_max` query parameter.
///
/// lapin gives every connection a receive and a send buffer of 32 frames.
/// When the client asks for no limit, it takes the broker's (RabbitMQ:
/// 128 KiB) and grows both buffers to 4 MiB by writing zeros through them,
/// so each connection holds 8 MiB resident from the moment it opens. At
/// 16 KiB a buffer is 512 KiB and the kernel maps its pages only as data
/// passes through. A message larger than a frame travels in several, as the
/// protocol does for any body over the frame size.
pub(crate) const DEFAULT_FRAME_MAX: u32 = 16 * 1024;

/// An AMQP URL lapin cannot read.
#[derive(Debug, thiserror::Error)]
#[error("invalid AMQP URL {url}: {reason}")]
pub(crate) struct AmqpUriError {
    /// The URL with its password hidden.
    url: String,
    /// What is wrong with it, with the password hidden too.
    pub(crate) reason: String,
}

/// `url` parsed as lapin reads it, with `frame_max` set to
/// [`DEFAULT_FRAME_MAX`] unless the URL sets one (`?frame_max=0` takes the
/// broker's limit).
pub(crate) fn parse(url: &str) -> Result<AMQPUri, AmqpUriError> {
    let mut uri: AMQPUri = url.parse().map_err(|reason: String| {
        let hidden = redact(url);
        AmqpUriError {
            reason: reason.replace(url, &hidden),
            url: hidden,
        }
    })?;
    uri.query.frame_max.get_or_insert(DEFAULT_FRAME_MAX);
    Ok(uri)
}

impl BrokerUrl {
    /// The URL as patron's AMQP connections open it (see [`parse`]).
    pub(crate) fn amqp_uri(&self) -> Result<AMQPUri, AmqpUriError> {
        parse(self.expose())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asks_for_the_default_frame_size_unless_the_url_names_one() {
        let uri = parse("amqp://guest:guest@127.0.0.1:5672/%2f").unwrap();
        assert_eq!(uri.query.frame_max, Some(DEFAULT_FRAME_MAX));
        assert_eq!(uri.vhost, "/");
        assert_eq!(uri.authority.port, 5672);

        let uri = parse("amqp://mq/%2f?frame_max=131072&heartbeat=5").unwrap();
        assert_eq!(uri.query.frame_max, Some(131_072));
        assert_eq!(uri.query.heartbeat, Some(5));

        let uri = parse("amqps://mq/%2f?frame_max=0").unwrap();
        assert_eq!(uri.query.frame_max, Some(0), "0 leaves it to the broker");
    }

    #[test]
    fn a_bad_url_names_the_problem_and_hides_the_password() {
        let err = parse("amqp://user:secret@mq/%2f?frame_max=big")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("invalid AMQP URL amqp://user:***@mq/%2f?frame_max=big: "));
        assert!(err.contains("invalid digit"), "{err}");
        assert!(!err.contains("secret"), "{err}");

        let err = parse("http://user:secret@mq/").unwrap_err().to_string();
        assert!(err.contains("user:***@mq"), "{err}");
        assert!(!err.contains("secret"), "{err}");
    }
}
