/* version: the software version and the wire protocol version. */
#ifndef FL_VERSION_H
#define FL_VERSION_H

#define FL_VERSION "0.1.0"
/* The wire protocol version (proto/fedopt.proto): Hello and Welcome carry it. */
#define FL_PROTOCOL_VERSION 1u
/* Minor version this build speaks (1.1: UpdateResult, tensor tables, codecs);
 * negotiated down to the peer's in Hello/Welcome. */
#define FL_PROTOCOL_MINOR 1u

#endif
