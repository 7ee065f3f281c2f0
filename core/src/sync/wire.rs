//! Requests and answers as the engine builds and reads them: headers, compressed bodies, and
//! a non-2xx answer turned into the server's typed error.

use serde::Serialize;

use super::transport::{HttpRequest, HttpResponse};
use crate::error::{Error, Result};
use zoufang_protocol::messages::{self, ErrorBody};

pub(crate) fn request(method: &str, path: &str, token: Option<&str>, body: Vec<u8>) -> HttpRequest {
    let mut headers = vec![
        ("Content-Type".to_owned(), "application/json".to_owned()),
        ("Content-Encoding".to_owned(), "zstd".to_owned()),
        ("Accept-Encoding".to_owned(), "zstd".to_owned()),
    ];
    if let Some(t) = token {
        headers.push(("Authorization".to_owned(), format!("Bearer {t}")));
    }
    HttpRequest {
        method: method.to_owned(),
        path: path.to_owned(),
        headers,
        body,
    }
}

pub(crate) fn encode<T: Serialize>(message: &T) -> Result<Vec<u8>> {
    messages::encode(message).map_err(|e| Error::Storage(format!("cannot encode a message: {e}")))
}

/// A non-2xx response as an error with the server's code.
pub(crate) fn server_error(response: &HttpResponse) -> Error {
    match messages::decode::<ErrorBody>(&response.body) {
        Ok(b) if response.status == 401 && b.error.code == "token_expired" => Error::TokenExpired,
        Ok(b) => Error::Server {
            status: response.status,
            code: b.error.code,
            message: b.error.message,
        },
        Err(_) => Error::Server {
            status: response.status,
            code: "unknown".into(),
            message: "the server sent an unreadable error".into(),
        },
    }
}

/// The server's own order to wipe this device (never a bare 410 from a proxy on the way).
pub(crate) fn is_wipe_order(response: &HttpResponse) -> bool {
    response.status == 410
        && matches!(server_error(response), Error::Server { code, .. } if code == "device_wiped")
}

pub(crate) fn decode<T: for<'de> serde::Deserialize<'de>>(response: &HttpResponse) -> Result<T> {
    if response.status != 200 {
        return Err(server_error(response));
    }
    messages::decode(&response.body).map_err(|e| Error::Server {
        status: 200,
        code: "bad_message".into(),
        message: e.to_string(),
    })
}
