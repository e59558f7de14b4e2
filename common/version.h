/* version: the software version and the wire protocol version. */
#ifndef FL_VERSION_H
#define FL_VERSION_H

#define FL_VERSION "0.1.0"

#endif
