/*
 * DynamoDbLocalLauncher: runs DynamoDB Local bound to 127.0.0.1 only.
 *
 * Why this exists: DynamoDB Local (DynamoDBLocal.jar) has no bind-address
 * option; its embedded Jetty server listens on every interface (0.0.0.0).
 * A test emulator with no authentication must not be reachable from other
 * hosts, so this launcher builds the server through DynamoDB Local's own
 * API (ServerRunner.createServerFromCommandLineArgs, same arguments as the
 * jar's main), finds the Jetty org.eclipse.jetty.server.Server inside the
 * returned DynamoDBProxyServer by reflection, sets the host of each of its
 * network connectors to the bind address, and only then starts it.
 *
 * It is compiled without DynamoDB Local on the class path (everything is
 * reflective), and run as:
 *   java -Djava.library.path=<dir>/DynamoDBLocal_lib \
 *        -cp <launcher-classes>:<dir>/DynamoDBLocal.jar \
 *        DynamoDbLocalLauncher -inMemory -port N -disableTelemetry
 * All arguments are passed to DynamoDB Local unchanged. The bind address
 * is 127.0.0.1 unless the system property outbox.dynamodb.bindHost says
 * otherwise (e.g. ::1).
 *
 * Anything unexpected (class, field or method not found, a connector that
 * cannot be rebound, the server not ending up bound where asked) is fatal:
 * it exits with status 2 and a message, and never falls back to listening
 * on all interfaces.
 *
 * It uses safeStart() (plain Jetty start) rather than start(): start()
 * swallows a bind failure (prints it and returns normally), and also emits
 * the start-up telemetry event, which we never want.
 */

import java.lang.reflect.Field;
import java.lang.reflect.InvocationTargetException;
import java.lang.reflect.Method;

public final class DynamoDbLocalLauncher {
    private static final String[] SERVER_RUNNER_CLASSES = {
        // DynamoDB Local 3.x
        "software.amazon.dynamodb.services.local.main.ServerRunner",
        // DynamoDB Local 1.x / 2.x
        "com.amazonaws.services.dynamodbv2.local.main.ServerRunner",
    };
    private static final String JETTY_SERVER = "org.eclipse.jetty.server.Server";

    public static void main(String[] args) {
        String host = System.getProperty("outbox.dynamodb.bindHost", "127.0.0.1");
        try {
            run(args, host);
        } catch (Throwable t) {
            Throwable cause = t;
            while (cause instanceof InvocationTargetException && cause.getCause() != null) {
                cause = cause.getCause();
            }
            System.err.println("DynamoDbLocalLauncher: FATAL: " + cause);
            cause.printStackTrace(System.err);
            System.err.println("DynamoDbLocalLauncher: refusing to run DynamoDB Local"
                + " unless it is bound to " + host);
            System.err.flush();
            // halt, not exit: Jetty's non-daemon threads or shutdown hooks
            // must not keep a half-started server alive.
            Runtime.getRuntime().halt(2);
        }
    }

    private static void run(String[] args, String host) throws Exception {
        Class<?> runner = loadFirst(SERVER_RUNNER_CLASSES);
        Method create = runner.getMethod("createServerFromCommandLineArgs", String[].class);
        Object proxyServer = create.invoke(null, (Object) args);
        if (proxyServer == null) {
            throw new IllegalStateException("createServerFromCommandLineArgs returned null");
        }

        Class<?> jettyServerClass = Class.forName(JETTY_SERVER, true, runner.getClassLoader());
        Object jetty = findFieldValue(proxyServer, jettyServerClass);

        Object[] connectors = (Object[]) jetty.getClass().getMethod("getConnectors").invoke(jetty);
        if (connectors == null || connectors.length == 0) {
            throw new IllegalStateException("Jetty server has no connectors");
        }
        for (Object c : connectors) {
            Method setHost = findMethod(c.getClass(), "setHost", String.class);
            if (setHost == null) {
                throw new IllegalStateException("connector " + c.getClass().getName()
                    + " has no setHost(String); cannot restrict it to " + host);
            }
            setHost.invoke(c, host);
        }

        // Plain Jetty start; throws on bind failure.
        proxyServer.getClass().getMethod("safeStart").invoke(proxyServer);

        // Verify: started, and every connector is bound to the requested host.
        boolean started = (Boolean) jetty.getClass().getMethod("isStarted").invoke(jetty);
        if (!started) {
            throw new IllegalStateException("Jetty server did not start");
        }
        StringBuilder bound = new StringBuilder();
        for (Object c : connectors) {
            Object h = c.getClass().getMethod("getHost").invoke(c);
            int port = (Integer) c.getClass().getMethod("getLocalPort").invoke(c);
            if (!host.equals(h) || port <= 0) {
                throw new IllegalStateException("connector not bound as requested: host="
                    + h + " localPort=" + port);
            }
            bound.append(' ').append(h).append(':').append(port);
        }
        System.out.println("DynamoDbLocalLauncher: listening on" + bound);
        System.out.flush();

        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            try {
                proxyServer.getClass().getMethod("stop").invoke(proxyServer);
            } catch (Throwable ignored) {
                // exiting anyway
            }
        }, "dynamodb-local-stop"));

        proxyServer.getClass().getMethod("join").invoke(proxyServer);
    }

    private static Class<?> loadFirst(String[] names) throws ClassNotFoundException {
        for (String n : names) {
            try {
                return Class.forName(n);
            } catch (ClassNotFoundException e) {
                // try the next one
            }
        }
        throw new ClassNotFoundException("none of " + String.join(", ", names)
            + " on the class path (is DynamoDBLocal.jar on -cp?)");
    }

    /** The value of the (single) field of type {@code type} in obj's class hierarchy. */
    private static Object findFieldValue(Object obj, Class<?> type) throws Exception {
        Field found = null;
        for (Class<?> k = obj.getClass(); k != null; k = k.getSuperclass()) {
            for (Field f : k.getDeclaredFields()) {
                if (type.isAssignableFrom(f.getType())) {
                    if (found != null) {
                        throw new IllegalStateException("more than one " + type.getName()
                            + " field in " + obj.getClass().getName());
                    }
                    found = f;
                }
            }
        }
        if (found == null) {
            throw new IllegalStateException("no " + type.getName() + " field in "
                + obj.getClass().getName());
        }
        found.setAccessible(true);
        Object value = found.get(obj);
        if (value == null) {
            throw new IllegalStateException("field " + found + " is null");
        }
        return value;
    }

    private static Method findMethod(Class<?> k, String name, Class<?>... params) {
        try {
            return k.getMethod(name, params);
        } catch (NoSuchMethodException e) {
            return null;
        }
    }
}
