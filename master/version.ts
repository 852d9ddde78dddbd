/** The software version both ends report in session.hello. */
export const VERSION = '0.1.0';
